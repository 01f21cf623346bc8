//! The classic consumer group coordinator: members join, one of them (the leader) assigns
//! partitions, everyone syncs, and heartbeats keep members in. Membership lives in memory, as
//! in Kafka (members rejoin after a restart); committed offsets are durable, in the store SQL
//! subscriptions use (`db`).
//!
//! ```text
//!  Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
//!    ▲                 ▲   ▲                                      │ leader syncs
//!    │ last leaves     │   └──── join, leave, session timeout ────┤
//!    └─────────────────┴─────────────────────────────────────── Stable
//! ```
//!
//! A rebalance waits for every member to rejoin, up to the longest rebalance timeout; those
//! that do not are removed. A first rebalance of an empty group waits
//! [`INITIAL_REBALANCE_DELAY`] for more members (Kafka's `group.initial.rebalance.delay.ms`),
//! so consumers started together form one generation. Deadlines are checked by one task
//! every [`TICK`], as Kafka's purgatory does; joins and syncs complete as soon as they can.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long an empty group's first rebalance waits for more members.
pub const INITIAL_REBALANCE_DELAY: Duration = Duration::from_millis(3000);
/// How often deadlines (sessions, rebalances) are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// The session timeouts a member may ask for (Kafka's `group.min/max.session.timeout.ms`).
const MIN_SESSION: Duration = Duration::from_millis(1000);
const MAX_SESSION: Duration = Duration::from_secs(30 * 60);

/// Kafka's error codes the coordinator answers with.
pub mod code {
    pub const NONE: i16 = 0;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl State {
    /// As Kafka names it (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
            State::Dead => "Dead",
        }
    }
}

/// A JoinGroup request, as the coordinator needs it.
#[derive(Debug, Clone)]
pub struct Join {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata), in the member's order of preference.
    pub protocols: Vec<(String, Bytes)>,
    /// The client requires a member id to be issued first (JoinGroup v4+).
    pub requires_member_id: bool,
}

/// A member as the leader sees it in the join response.
#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// The answer to a join.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Every member, for the leader; empty for the others.
    pub members: Vec<JoinedMember>,
}

impl Joined {
    fn error(error: i16, member_id: &str) -> Joined {
        Joined {
            error,
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: vec![],
        }
    }
}

/// The answer to a sync: the member's assignment.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl Synced {
    fn error(error: i16) -> Synced {
        Synced {
            error,
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// What DescribeGroups shows of a group.
#[derive(Debug, Clone)]
pub struct Described {
    pub state: State,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone)]
pub struct DescribedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the member was last heard from.
    seen: Instant,
    /// Its pending JoinGroup, answered when the rebalance completes.
    joining: Option<oneshot::Sender<Joined>>,
    /// Its pending SyncGroup, answered when the leader's assignment arrives.
    syncing: Option<oneshot::Sender<Synced>>,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    /// In the order they joined.
    members: Vec<Member>,
    /// Member ids issued (MEMBER_ID_REQUIRED) but not yet used, with their deadline.
    pending: HashMap<String, Instant>,
    /// When the rebalance in progress completes, whoever has not rejoined.
    rebalance_deadline: Option<Instant>,
    /// The first rebalance of an empty group waits for more members until then.
    initial_until: Option<Instant>,
    /// Held while the group has members (or ids issued to joiners): a SQL cursor cannot
    /// read the group meanwhile.
    claim: Option<Claimed>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: vec![],
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_until: None,
            claim: None,
        }
    }

    /// Lets SQL cursors read the group again once nobody is in it.
    fn release_if_idle(&mut self) {
        if self.members.is_empty() && self.pending.is_empty() {
            self.claim = None;
        }
    }

    fn member(&mut self, id: &str) -> Option<&mut Member> {
        self.members.iter_mut().find(|m| m.id == id)
    }

    /// Starts a rebalance: pending syncs are told to rejoin.
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Duration) {
        for member in &mut self.members {
            if let Some(sync) = member.syncing.take() {
                let _ = sync.send(Synced::error(code::REBALANCE_IN_PROGRESS));
            }
        }
        let longest = self
            .members
            .iter()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::ZERO);
        if self.state == State::Empty {
            self.initial_until = Some(now + initial_delay.min(longest));
        }
        self.state = State::PreparingRebalance;
        self.rebalance_deadline = Some(now + longest);
    }

    /// Completes the rebalance if it can: every member has rejoined (and the initial delay
    /// is over), or the deadline has passed (those who did not rejoin are removed).
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.iter().all(|m| m.joining.is_some());
        let waiting_for_more = self.initial_until.is_some_and(|until| now < until);
        let overdue = self.rebalance_deadline.is_some_and(|d| now >= d);
        if !(overdue || (all_joined && !waiting_for_more)) {
            return;
        }
        self.members.retain(|m| m.joining.is_some());
        self.initial_until = None;
        self.rebalance_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.choose_protocol();
        if !self
            .leader
            .as_ref()
            .is_some_and(|l| self.members.iter().any(|m| &m.id == l))
        {
            self.leader = Some(self.members[0].id.clone());
        }
        let leader = self.leader.clone().expect("a leader");
        let protocol = self.protocol.clone().expect("a common protocol");
        let everyone: Vec<JoinedMember> = self
            .members
            .iter()
            .map(|m| JoinedMember {
                member_id: m.id.clone(),
                instance_id: m.instance_id.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol)
                    .map(|(_, metadata)| metadata.clone())
                    .unwrap_or_default(),
            })
            .collect();
        for member in &mut self.members {
            member.seen = now;
            member.assignment = Bytes::new();
            let joined = Joined {
                error: code::NONE,
                generation: self.generation,
                protocol_type: self.protocol_type.clone(),
                protocol: Some(protocol.clone()),
                leader: leader.clone(),
                member_id: member.id.clone(),
                members: if member.id == leader {
                    everyone.clone()
                } else {
                    vec![]
                },
            };
            if let Some(join) = member.joining.take() {
                let _ = join.send(joined);
            }
        }
        self.state = State::CompletingRebalance;
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn choose_protocol(&self) -> Option<String> {
        let first = self.members.first()?;
        let common: Vec<&String> = first
            .protocols
            .iter()
            .map(|(name, _)| name)
            .filter(|name| {
                self.members
                    .iter()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(&String, usize)> = common.iter().map(|c| (*c, 0)).collect();
        for member in &self.members {
            if let Some((name, _)) = member.protocols.iter().find(|(n, _)| common.contains(&n))
                && let Some(vote) = votes.iter_mut().find(|(c, _)| *c == name)
            {
                vote.1 += 1;
            }
        }
        votes
            .iter()
            .rev()
            .max_by_key(|(_, count)| *count)
            .map(|(name, _)| (*name).clone())
    }

    /// A member is gone (left, or its session expired).
    fn remove(&mut self, id: &str, now: Instant, initial_delay: Duration) {
        let Some(at) = self.members.iter().position(|m| m.id == id) else {
            return;
        };
        let member = self.members.remove(at);
        if let Some(join) = member.joining {
            let _ = join.send(Joined::error(code::UNKNOWN_MEMBER_ID, id));
        }
        if let Some(sync) = member.syncing {
            let _ = sync.send(Synced::error(code::UNKNOWN_MEMBER_ID));
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        match self.state {
            State::Stable | State::CompletingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.state = State::Empty;
                    self.protocol = None;
                } else {
                    self.prepare_rebalance(now, initial_delay);
                }
            }
            State::PreparingRebalance => {
                if self.members.is_empty() {
                    self.generation += 1;
                    self.state = State::Empty;
                    self.protocol = None;
                    self.rebalance_deadline = None;
                    self.initial_until = None;
                } else {
                    self.try_complete_join(now);
                }
            }
            State::Empty | State::Dead => {}
        }
    }

    /// Whether `member_id` in `generation` may `act` on the group now. As Kafka's
    /// coordinator: a heartbeat during a rebalance's join phase tells the member to
    /// rejoin, while a commit then is taken (a member commits what it processed as its
    /// partitions are revoked, before it rejoins); between join and sync, a commit is told
    /// the rebalance is in progress.
    fn check_member(&self, member_id: &str, generation: i32, act: Act) -> i16 {
        if !self.members.iter().any(|m| m.id == member_id) {
            return code::UNKNOWN_MEMBER_ID;
        }
        if generation != self.generation {
            return code::ILLEGAL_GENERATION;
        }
        match (act, self.state) {
            (Act::Heartbeat, State::PreparingRebalance)
            | (Act::Commit, State::CompletingRebalance) => code::REBALANCE_IN_PROGRESS,
            _ => code::NONE,
        }
    }
}

/// What a member does that the group's state decides on.
#[derive(Clone, Copy)]
enum Act {
    Heartbeat,
    Commit,
}

/// Claims a group for Kafka consumers: `None` if it is read otherwise (a SQL cursor);
/// the claim lasts until what it returns is dropped.
pub type Claim = Box<dyn Fn(&str) -> Option<Claimed> + Send + Sync>;
/// A claim on a group.
pub type Claimed = Box<dyn std::any::Any + Send>;

/// Every group's membership.
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: std::sync::atomic::AtomicU64,
    initial_delay: Duration,
    claim: Claim,
}

impl Coordinator {
    /// A coordinator, and the task that enforces its deadlines (it stops when the
    /// coordinator is dropped).
    pub fn start(claim: Claim) -> Arc<Coordinator> {
        Self::start_with(INITIAL_REBALANCE_DELAY, claim)
    }

    /// [`Coordinator::start`] with another initial rebalance delay.
    pub fn start_with(initial_delay: Duration, claim: Claim) -> Arc<Coordinator> {
        let coordinator = Arc::new(Coordinator {
            groups: Mutex::new(HashMap::new()),
            next_member: std::sync::atomic::AtomicU64::new(1),
            initial_delay,
            claim,
        });
        let weak = Arc::downgrade(&coordinator);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TICK);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match weak.upgrade() {
                    Some(coordinator) => coordinator.enforce_deadlines(Instant::now()),
                    None => return,
                }
            }
        });
        coordinator
    }

    fn member_id(&self, client_id: &str) -> String {
        let n = self
            .next_member
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{client_id}-{n}-{}", uuid_like(n))
    }

    /// Joins a member to its group; answers when the rebalance completes.
    pub async fn join(&self, join: Join) -> Joined {
        let receiver = {
            let mut groups = self.groups.lock().expect("groups lock");
            let now = Instant::now();
            if join.group.is_empty() {
                return Joined::error(code::INVALID_GROUP_ID, &join.member_id);
            }
            if join.session_timeout < MIN_SESSION || join.session_timeout > MAX_SESSION {
                return Joined::error(code::INVALID_SESSION_TIMEOUT, &join.member_id);
            }
            if join.protocol_type.is_empty() || join.protocols.is_empty() {
                return Joined::error(code::INCONSISTENT_GROUP_PROTOCOL, &join.member_id);
            }
            let group = groups.entry(join.group.clone()).or_insert_with(Group::new);
            if group.state == State::Dead {
                *group = Group::new();
            }
            if group.claim.is_none() {
                match (self.claim)(&join.group) {
                    Some(claim) => group.claim = Some(claim),
                    None => {
                        // A SQL cursor reads the group: a consumer of another kind.
                        return Joined::error(code::INCONSISTENT_GROUP_PROTOCOL, &join.member_id);
                    }
                }
            }
            if !group.members.is_empty() {
                let same_type = group.protocol_type.as_deref() == Some(join.protocol_type.as_str());
                let shared = join.protocols.iter().any(|(name, _)| {
                    group
                        .members
                        .iter()
                        .filter(|m| m.id != join.member_id)
                        .all(|m| m.protocols.iter().any(|(n, _)| n == name))
                });
                if !same_type || !shared {
                    return Joined::error(code::INCONSISTENT_GROUP_PROTOCOL, &join.member_id);
                }
            }
            let mut member_id = join.member_id.clone();
            if member_id.is_empty() {
                member_id = self.member_id(&join.client_id);
                if join.requires_member_id {
                    group
                        .pending
                        .insert(member_id.clone(), now + join.session_timeout);
                    return Joined::error(code::MEMBER_ID_REQUIRED, &member_id);
                }
            } else if group.pending.remove(&member_id).is_none()
                && group.member(&member_id).is_none()
            {
                group.release_if_idle();
                return Joined::error(code::UNKNOWN_MEMBER_ID, &member_id);
            }
            let (sender, receiver) = oneshot::channel();
            let changed = match group.member(&member_id) {
                Some(member) => {
                    let changed = member.protocols != join.protocols;
                    member.protocols = join.protocols.clone();
                    member.session_timeout = join.session_timeout;
                    member.rebalance_timeout = join.rebalance_timeout;
                    member.seen = now;
                    if let Some(old) = member.joining.replace(sender) {
                        let _ = old.send(Joined::error(code::UNKNOWN_MEMBER_ID, &member_id));
                    }
                    changed
                }
                None => {
                    group.members.push(Member {
                        id: member_id.clone(),
                        instance_id: join.instance_id.clone(),
                        client_id: join.client_id.clone(),
                        client_host: join.client_host.clone(),
                        session_timeout: join.session_timeout,
                        rebalance_timeout: join.rebalance_timeout,
                        protocols: join.protocols.clone(),
                        assignment: Bytes::new(),
                        seen: now,
                        joining: Some(sender),
                        syncing: None,
                    });
                    true
                }
            };
            group.protocol_type = Some(join.protocol_type.clone());
            match group.state {
                State::PreparingRebalance => {
                    if changed && let Some(until) = group.initial_until {
                        // Another member arrived during the initial delay: wait a while
                        // longer for more, within the rebalance timeout.
                        let deadline = group.rebalance_deadline.unwrap_or(until);
                        group.initial_until = Some((now + self.initial_delay).min(deadline));
                    }
                }
                State::Empty | State::Dead => group.prepare_rebalance(now, self.initial_delay),
                State::CompletingRebalance | State::Stable => {
                    let leader = group.leader.as_deref() == Some(member_id.as_str());
                    if changed || leader {
                        group.prepare_rebalance(now, self.initial_delay);
                    } else {
                        // A follower rejoining unchanged: the current generation stands.
                        let member = group.member(&member_id).expect("joined");
                        let sender = member.joining.take().expect("just set");
                        let _ = sender.send(Joined {
                            error: code::NONE,
                            generation: group.generation,
                            protocol_type: group.protocol_type.clone(),
                            protocol: group.protocol.clone(),
                            leader: group.leader.clone().unwrap_or_default(),
                            member_id: member_id.clone(),
                            members: vec![],
                        });
                    }
                }
            }
            group.try_complete_join(now);
            receiver
        };
        receiver
            .await
            .unwrap_or_else(|_| Joined::error(code::UNKNOWN_MEMBER_ID, ""))
    }

    /// A member's SyncGroup: the leader's carries every member's assignment; each member
    /// gets its own once the leader's has arrived.
    pub async fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Synced {
        let receiver = {
            let mut groups = self.groups.lock().expect("groups lock");
            let now = Instant::now();
            let Some(group) = groups.get_mut(group) else {
                return Synced::error(code::UNKNOWN_MEMBER_ID);
            };
            let Some(member) = group.member(member_id) else {
                return Synced::error(code::UNKNOWN_MEMBER_ID);
            };
            member.seen = now;
            if generation != group.generation {
                return Synced::error(code::ILLEGAL_GENERATION);
            }
            let answer = |group: &Group, assignment: Bytes| Synced {
                error: code::NONE,
                protocol_type: group.protocol_type.clone(),
                protocol: group.protocol.clone(),
                assignment,
            };
            match group.state {
                State::PreparingRebalance => return Synced::error(code::REBALANCE_IN_PROGRESS),
                State::Stable => {
                    let assignment = group
                        .member(member_id)
                        .expect("a member")
                        .assignment
                        .clone();
                    return answer(group, assignment);
                }
                State::Empty | State::Dead => return Synced::error(code::UNKNOWN_MEMBER_ID),
                State::CompletingRebalance => {}
            }
            let (sender, receiver) = oneshot::channel();
            group.member(member_id).expect("a member").syncing = Some(sender);
            if group.leader.as_deref() == Some(member_id) {
                for (id, assignment) in assignments {
                    if let Some(member) = group.member(&id) {
                        member.assignment = assignment;
                    }
                }
                group.state = State::Stable;
                let synced: Vec<(oneshot::Sender<Synced>, Bytes)> = group
                    .members
                    .iter_mut()
                    .filter_map(|m| m.syncing.take().map(|s| (s, m.assignment.clone())))
                    .collect();
                for (sender, assignment) in synced {
                    let _ = sender.send(answer(group, assignment));
                }
            }
            receiver
        };
        receiver
            .await
            .unwrap_or_else(|_| Synced::error(code::REBALANCE_IN_PROGRESS))
    }

    pub fn heartbeat(&self, group: &str, member_id: &str, generation: i32) -> i16 {
        let mut groups = self.groups.lock().expect("groups lock");
        let Some(group) = groups.get_mut(group) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        if let Some(member) = group.member(member_id) {
            member.seen = Instant::now();
        }
        group.check_member(member_id, generation, Act::Heartbeat)
    }

    /// Members leave; each gets its error code (UNKNOWN_MEMBER_ID if not a member).
    pub fn leave(&self, group: &str, members: &[String]) -> Vec<i16> {
        let mut groups = self.groups.lock().expect("groups lock");
        let now = Instant::now();
        let Some(group) = groups.get_mut(group) else {
            return vec![code::UNKNOWN_MEMBER_ID; members.len()];
        };
        let answers = members
            .iter()
            .map(|id| {
                if group.members.iter().any(|m| &m.id == id) {
                    group.remove(id, now, self.initial_delay);
                    code::NONE
                } else {
                    code::UNKNOWN_MEMBER_ID
                }
            })
            .collect();
        group.release_if_idle();
        answers
    }

    /// Whether an offset commit from `member_id` in `generation` is accepted: from a member
    /// of the current generation, or from outside any generation (-1, no member id) while
    /// the group has no members (a consumer that assigns itself partitions).
    pub fn may_commit(&self, group: &str, member_id: &str, generation: i32) -> i16 {
        let mut groups = self.groups.lock().expect("groups lock");
        match groups.get_mut(group) {
            None => code::NONE,
            Some(g) if g.members.is_empty() => {
                if generation < 0 || member_id.is_empty() {
                    code::NONE
                } else {
                    code::ILLEGAL_GENERATION
                }
            }
            Some(_) if generation < 0 && member_id.is_empty() => code::UNKNOWN_MEMBER_ID,
            Some(g) => {
                let answer = g.check_member(member_id, generation, Act::Commit);
                // A member's commit shows it is alive, as a heartbeat does.
                if answer == code::NONE
                    && let Some(member) = g.member(member_id)
                {
                    member.seen = Instant::now();
                }
                answer
            }
        }
    }

    /// Every group with members or a state, by name, with its state and protocol type.
    pub fn list(&self) -> Vec<(String, State, String)> {
        let groups = self.groups.lock().expect("groups lock");
        groups
            .iter()
            .map(|(name, g)| {
                (
                    name.clone(),
                    g.state,
                    g.protocol_type.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// A group as DescribeGroups shows it (Dead if the coordinator does not know it).
    pub fn describe(&self, group: &str) -> Described {
        let groups = self.groups.lock().expect("groups lock");
        match groups.get(group) {
            None => Described {
                state: State::Dead,
                protocol_type: String::new(),
                protocol: String::new(),
                members: vec![],
            },
            Some(g) => Described {
                state: g.state,
                protocol_type: g.protocol_type.clone().unwrap_or_default(),
                protocol: g.protocol.clone().unwrap_or_default(),
                members: g
                    .members
                    .iter()
                    .map(|m| DescribedMember {
                        member_id: m.id.clone(),
                        instance_id: m.instance_id.clone(),
                        client_id: m.client_id.clone(),
                        client_host: m.client_host.clone(),
                        metadata: g
                            .protocol
                            .as_ref()
                            .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
                            .map(|(_, metadata)| metadata.clone())
                            .unwrap_or_default(),
                        assignment: m.assignment.clone(),
                    })
                    .collect(),
            },
        }
    }

    /// Removes members whose session expired, completes rebalances whose time is up, and
    /// forgets empty groups (their offsets stay in the store).
    fn enforce_deadlines(&self, now: Instant) {
        let mut groups = self.groups.lock().expect("groups lock");
        for group in groups.values_mut() {
            group.pending.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .iter()
                .filter(|m| m.joining.is_none() && now.duration_since(m.seen) > m.session_timeout)
                .map(|m| m.id.clone())
                .collect();
            for id in expired {
                tracing::info!(member = %id, "a consumer group member's session expired");
                group.remove(&id, now, self.initial_delay);
            }
            group.try_complete_join(now);
        }
        for group in groups.values_mut() {
            group.release_if_idle();
        }
        groups.retain(|_, g| {
            !(g.state == State::Empty && g.members.is_empty() && g.pending.is_empty())
        });
    }
}

/// A short unique suffix for member ids, as Kafka's are `client-id-<uuid>`.
fn uuid_like(n: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:016x}", nanos ^ n.rotate_left(32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(member_id: &str, protocols: &[&str]) -> Join {
        Join {
            group: "g".into(),
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout: Duration::from_millis(1000),
            rebalance_timeout: Duration::from_millis(1500),
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(p.to_string())))
                .collect(),
            requires_member_id: true,
        }
    }

    #[tokio::test]
    async fn members_join_sync_and_rebalance_on_leave() {
        let coordinator =
            Coordinator::start_with(Duration::from_millis(300), Box::new(|_| Some(Box::new(()))));
        let first = coordinator.join(join("", &["range"])).await;
        assert_eq!(first.error, code::MEMBER_ID_REQUIRED);
        let a = first.member_id;
        let c = coordinator.clone();
        let a_join = tokio::spawn({
            let a = a.clone();
            async move { c.join(join(&a, &["range", "roundrobin"])).await }
        });
        tokio::task::yield_now().await;
        let b = coordinator
            .join(join("", &["roundrobin", "range"]))
            .await
            .member_id;
        let c = coordinator.clone();
        let b_join = tokio::spawn({
            let b = b.clone();
            async move { c.join(join(&b, &["roundrobin", "range"])).await }
        });
        // The initial delay passes; both are in generation 1.
        let (ja, jb) = (a_join.await.unwrap(), b_join.await.unwrap());
        assert_eq!((ja.error, jb.error), (0, 0));
        assert_eq!((ja.generation, jb.generation), (1, 1));
        assert_eq!(ja.leader, a);
        assert_eq!(ja.members.len(), 2);
        assert!(jb.members.is_empty());
        // One vote each: the leader's first choice among the common ones breaks the tie.
        assert!(ja.protocol.is_some());
        assert_eq!(coordinator.describe("g").state, State::CompletingRebalance);
        assert_eq!(coordinator.heartbeat("g", &b, 1), code::NONE);
        assert_eq!(
            coordinator.may_commit("g", &b, 1),
            code::REBALANCE_IN_PROGRESS
        );

        let c = coordinator.clone();
        let b_sync = tokio::spawn({
            let b = b.clone();
            async move { c.sync("g", &b, 1, vec![]).await }
        });
        tokio::task::yield_now().await;
        let sa = coordinator
            .sync(
                "g",
                &a,
                1,
                vec![(a.clone(), Bytes::from("A")), (b.clone(), Bytes::from("B"))],
            )
            .await;
        assert_eq!(sa.assignment, Bytes::from("A"));
        assert_eq!(b_sync.await.unwrap().assignment, Bytes::from("B"));
        assert_eq!(coordinator.describe("g").state, State::Stable);
        assert_eq!(coordinator.may_commit("g", &a, 1), code::NONE);
        assert_eq!(coordinator.may_commit("g", &a, 0), code::ILLEGAL_GENERATION);
        assert_eq!(coordinator.may_commit("g", "", -1), code::UNKNOWN_MEMBER_ID);

        // b leaves: a is told to rejoin, and forms generation 2 alone.
        assert_eq!(
            coordinator.leave("g", std::slice::from_ref(&b)),
            vec![code::NONE]
        );
        assert_eq!(
            coordinator.heartbeat("g", &a, 1),
            code::REBALANCE_IN_PROGRESS
        );
        // What it processed before it rejoins is still committed.
        assert_eq!(coordinator.describe("g").state, State::PreparingRebalance);
        assert_eq!(coordinator.may_commit("g", &a, 1), code::NONE);
        let again = coordinator.join(join(&a, &["range"])).await;
        assert_eq!((again.error, again.generation), (0, 2));
        assert_eq!(again.members.len(), 1);
    }

    #[tokio::test]
    async fn a_silent_member_is_removed_after_its_session() {
        let coordinator =
            Coordinator::start_with(Duration::from_millis(300), Box::new(|_| Some(Box::new(()))));
        let mut j = join("", &["range"]);
        j.requires_member_id = false;
        let a = coordinator.join(j.clone()).await;
        assert_eq!((a.error, a.generation), (0, 1));
        let synced = coordinator
            .sync(
                "g",
                &a.member_id,
                1,
                vec![(a.member_id.clone(), Bytes::from("x"))],
            )
            .await;
        assert_eq!(synced.error, 0);
        // Heartbeats every quarter of its 1 s session keep it in for twice as long.
        let mut beats = tokio::time::interval(Duration::from_millis(250));
        for _ in 0..8 {
            beats.tick().await;
            assert_eq!(coordinator.heartbeat("g", &a.member_id, 1), code::NONE);
        }
        // Silent, it is removed once its session has passed (at most a few ticks later).
        let silent = std::time::Instant::now();
        while coordinator.describe("g").state != State::Dead {
            assert!(silent.elapsed() < Duration::from_secs(5), "never expired");
            beats.tick().await;
        }
        assert!(silent.elapsed() >= Duration::from_millis(900));
        assert_eq!(
            coordinator.heartbeat("g", &a.member_id, 1),
            code::UNKNOWN_MEMBER_ID
        );
        assert_eq!(coordinator.describe("g").state, State::Dead);
        // Offsets may be committed from outside a generation once it is empty.
        assert_eq!(coordinator.may_commit("g", "", -1), code::NONE);
    }

    #[tokio::test]
    async fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let coordinator =
            Coordinator::start_with(Duration::from_millis(300), Box::new(|_| Some(Box::new(()))));
        let mut j = join("", &["range"]);
        j.requires_member_id = false;
        let c = coordinator.clone();
        let ja = tokio::spawn({
            let j = j.clone();
            async move { c.join(j).await }
        });
        let jb = coordinator.join(j.clone()).await;
        let ja = ja.await.unwrap();
        assert_eq!((ja.generation, jb.generation), (1, 1));
        // A third member joins; only it and one other rejoin.
        let c = coordinator.clone();
        let jc = tokio::spawn({
            let j = j.clone();
            async move { c.join(j).await }
        });
        tokio::task::yield_now().await;
        let rejoined = coordinator.join(join(&ja.member_id, &["range"])).await;
        assert_eq!(rejoined.generation, 2);
        let jc = jc.await.unwrap();
        assert_eq!(jc.generation, 2);
        let members = coordinator.describe("g").members;
        assert_eq!(members.len(), 2);
        assert!(!members.iter().any(|m| m.member_id == jb.member_id));
    }

    #[tokio::test]
    async fn incompatible_members_are_refused() {
        let coordinator =
            Coordinator::start_with(Duration::from_millis(300), Box::new(|_| Some(Box::new(()))));
        let mut j = join("", &["range"]);
        j.requires_member_id = false;
        let c = coordinator.clone();
        let first = tokio::spawn({
            let j = j.clone();
            async move { c.join(j).await }
        });
        tokio::task::yield_now().await;
        let mut other = join("", &["sticky"]);
        other.requires_member_id = false;
        assert_eq!(
            coordinator.join(other).await.error,
            code::INCONSISTENT_GROUP_PROTOCOL
        );
        assert_eq!(first.await.unwrap().error, 0);
        let mut short = join("", &["range"]);
        short.session_timeout = Duration::from_millis(10);
        assert_eq!(
            coordinator.join(short).await.error,
            code::INVALID_SESSION_TIMEOUT
        );
    }
}
