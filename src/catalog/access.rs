//! Who may do what: owners, granted privileges and roles, as PostgreSQL has them.
//!
//! Every object (stream, schemaless topic, materialized view, external table,
//! subscription, and the schema `public`) has an owner and a list of grants, its
//! [`Access`]. The owner and superusers may do anything with an object; others need a
//! grant, to them or to `PUBLIC`. Reading or writing files on the server needs the
//! predefined roles `pg_read_server_files` / `pg_write_server_files` (or a superuser).
//! The checks themselves are pure functions of the catalog; `db` calls them for every
//! statement of every front end.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The bootstrap superuser, which owns what no one else does.
pub const SUPERUSER: &str = "runnel";

/// The grantee that stands for every user.
pub const PUBLIC: &str = "PUBLIC";

/// The predefined role that may read server files (`CREATE EXTERNAL TABLE`).
pub const READ_SERVER_FILES: &str = "pg_read_server_files";
/// The predefined role that may write server files (`COPY … TO 'file'`).
pub const WRITE_SERVER_FILES: &str = "pg_write_server_files";
/// Roles that exist without being created.
pub const PREDEFINED_ROLES: [&str; 2] = [READ_SERVER_FILES, WRITE_SERVER_FILES];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Privilege {
    Select,
    Insert,
    Update,
    Delete,
    Truncate,
    References,
    Trigger,
    Usage,
    Create,
}

/// What kind of object a grant names; which privileges it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectClass {
    /// Streams, topics, views and external tables.
    Relation,
    Subscription,
    Schema,
}

impl ObjectClass {
    /// What `ALL PRIVILEGES` means for this kind of object (PostgreSQL's order).
    pub fn all(self) -> &'static [Privilege] {
        use Privilege::*;
        match self {
            ObjectClass::Relation => &[
                Insert, Select, Update, Delete, Truncate, References, Trigger,
            ],
            ObjectClass::Subscription => &[Select, Usage],
            ObjectClass::Schema => &[Usage, Create],
        }
    }
}

impl Privilege {
    pub fn parse(word: &str) -> Option<Privilege> {
        use Privilege::*;
        Some(match word.to_ascii_uppercase().as_str() {
            "SELECT" => Select,
            "INSERT" => Insert,
            "UPDATE" => Update,
            "DELETE" => Delete,
            "TRUNCATE" => Truncate,
            "REFERENCES" => References,
            "TRIGGER" => Trigger,
            "USAGE" => Usage,
            "CREATE" => Create,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        use Privilege::*;
        match self {
            Select => "SELECT",
            Insert => "INSERT",
            Update => "UPDATE",
            Delete => "DELETE",
            Truncate => "TRUNCATE",
            References => "REFERENCES",
            Trigger => "TRIGGER",
            Usage => "USAGE",
            Create => "CREATE",
        }
    }

    /// The letter PostgreSQL's `aclitem` shows it as.
    fn letter(self) -> char {
        use Privilege::*;
        match self {
            Select => 'r',
            Insert => 'a',
            Update => 'w',
            Delete => 'd',
            Truncate => 'D',
            References => 'x',
            Trigger => 't',
            Usage => 'U',
            Create => 'C',
        }
    }
}

/// An object's owner and what others were granted on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    pub owner: String,
    /// Per grantee (a user, or [`PUBLIC`]), the privileges granted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub grants: BTreeMap<String, BTreeSet<Privilege>>,
}

/// Objects made before owners existed belong to the superuser.
impl Default for Access {
    fn default() -> Access {
        Access::owned_by(SUPERUSER)
    }
}

impl Access {
    pub fn owned_by(owner: &str) -> Access {
        Access {
            owner: owner.to_string(),
            grants: BTreeMap::new(),
        }
    }

    /// Whether `who` may use `privilege` on the object.
    pub fn allows(&self, who: &Principal, privilege: Privilege) -> bool {
        who.superuser
            || who.name == self.owner
            || [who.name.as_str(), PUBLIC].iter().any(|grantee| {
                self.grants
                    .get(*grantee)
                    .is_some_and(|p| p.contains(&privilege))
            })
    }

    pub fn grant(&mut self, grantee: &str, privileges: &[Privilege]) {
        self.grants
            .entry(grantee.to_string())
            .or_default()
            .extend(privileges.iter().copied());
    }

    pub fn revoke(&mut self, grantee: &str, privileges: &[Privilege]) {
        if let Some(granted) = self.grants.get_mut(grantee) {
            for p in privileges {
                granted.remove(p);
            }
            if granted.is_empty() {
                self.grants.remove(grantee);
            }
        }
    }

    /// The object's ACL as PostgreSQL's `aclitem[]` text (`{runnel=arwdDxt/runnel,
    /// ann=r/runnel,=r/runnel}`): the owner's own privileges first, then each grant.
    pub fn acl(&self, class: ObjectClass) -> Vec<String> {
        let letters = |privileges: &mut dyn Iterator<Item = Privilege>| -> String {
            let set: BTreeSet<Privilege> = privileges.collect();
            class
                .all()
                .iter()
                .filter(|p| set.contains(p))
                .map(|p| p.letter())
                .collect()
        };
        let mut out = vec![format!(
            "{}={}/{}",
            self.owner,
            letters(&mut class.all().iter().copied()),
            self.owner
        )];
        for (grantee, privileges) in &self.grants {
            let name = if grantee == PUBLIC { "" } else { grantee };
            out.push(format!(
                "{name}={}/{}",
                letters(&mut privileges.iter().copied()),
                self.owner
            ));
        }
        out
    }
}

/// Who runs a statement, with what they may do beyond their grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub superuser: bool,
    /// Predefined roles granted to them.
    pub roles: BTreeSet<String>,
}

impl Principal {
    /// The bootstrap superuser (for what the server does on its own).
    pub fn superuser() -> Principal {
        Principal {
            name: SUPERUSER.to_string(),
            superuser: true,
            roles: BTreeSet::new(),
        }
    }

    /// Whether they hold a predefined role (superusers hold all).
    pub fn has_role(&self, role: &str) -> bool {
        self.superuser || self.roles.contains(role)
    }

    /// 42501 unless they hold `role`, for doing `what`.
    pub fn require_role(&self, role: &str, what: &str) -> Result<()> {
        if self.has_role(role) {
            return Ok(());
        }
        Err(Error::plan(
            "42501",
            format!(
                "permission denied to {what}: only superusers and roles granted {role} may (GRANT {role} TO {})",
                self.name
            ),
        ))
    }
}

/// 42501 for `privilege` on `object`, PostgreSQL's wording.
pub fn denied(privilege: Privilege, kind: &str, object: &str) -> Error {
    Error::plan(
        "42501",
        format!(
            "permission denied for {kind} {object} (it needs {})",
            privilege.name()
        ),
    )
}

impl Principal {
    /// 42501 unless they are `owner` or a superuser: for what only an object's owner may do
    /// (drop it, reset it, grant on it).
    pub fn require_owner(&self, owner: &str, kind: &str, object: &str) -> Result<()> {
        if self.superuser || self.name == owner {
            Ok(())
        } else {
            Err(Error::plan(
                "42501",
                format!("must be owner of {kind} {object} (it belongs to {owner})"),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Principal {
        Principal {
            name: name.into(),
            superuser: false,
            roles: BTreeSet::new(),
        }
    }

    #[test]
    fn owners_superusers_grantees_and_public() {
        let mut access = Access::owned_by("ann");
        assert!(access.allows(&user("ann"), Privilege::Insert));
        assert!(access.allows(&Principal::superuser(), Privilege::Insert));
        assert!(!access.allows(&user("bob"), Privilege::Select));
        access.grant("bob", &[Privilege::Select]);
        assert!(access.allows(&user("bob"), Privilege::Select));
        assert!(!access.allows(&user("bob"), Privilege::Insert));
        assert!(!access.allows(&user("cat"), Privilege::Select));
        access.grant(PUBLIC, &[Privilege::Select]);
        assert!(access.allows(&user("cat"), Privilege::Select));
        access.revoke(PUBLIC, &[Privilege::Select]);
        access.revoke("bob", &[Privilege::Select]);
        assert!(access.grants.is_empty());
        assert!(!access.allows(&user("bob"), Privilege::Select));
    }

    #[test]
    fn acl_text_is_postgresql_s() {
        let mut access = Access::owned_by("ann");
        access.grant("bob", &[Privilege::Select, Privilege::Insert]);
        access.grant(PUBLIC, &[Privilege::Select]);
        assert_eq!(
            access.acl(ObjectClass::Relation),
            vec!["ann=arwdDxt/ann", "=r/ann", "bob=ar/ann"]
        );
    }
}
