//! `GRANT` and `REVOKE`: privileges on streams, topics, views, external tables,
//! subscriptions and the schema `public`, and the predefined roles.

use super::{Database, Output, command};
use crate::catalog::access::{PREDEFINED_ROLES, PUBLIC};
use crate::catalog::{Access, CatalogData, ObjectClass, Principal, Relation};
use crate::error::{Error, Result};
use crate::sql::parser::{GrantStatement, GrantTargets};

impl Database {
    pub(super) async fn grant(&self, statement: GrantStatement, who: &Principal) -> Result<Output> {
        let _ddl = self.tables.catalog.ddl_lock().await;
        let data = self.tables.catalog.snapshot();
        let mut new = (*data).clone();
        let tag = match statement {
            GrantStatement::Roles {
                grant,
                roles,
                users,
            } => {
                if !who.superuser {
                    return Err(Error::plan(
                        "42501",
                        "permission denied to grant or revoke roles: only superusers may",
                    ));
                }
                for role in &roles {
                    if !PREDEFINED_ROLES.contains(&role.as_str()) {
                        return Err(Error::Unsupported(format!(
                            "role \"{role}\" cannot be granted: the roles are {} (and users are granted privileges, not one another)",
                            PREDEFINED_ROLES.join(", ")
                        )));
                    }
                }
                for name in &users {
                    let user = new.users.get_mut(name).ok_or_else(|| no_role(name))?;
                    for role in &roles {
                        if grant {
                            user.roles.insert(role.clone());
                        } else {
                            user.roles.remove(role);
                        }
                    }
                }
                if grant { "GRANT ROLE" } else { "REVOKE ROLE" }
            }
            GrantStatement::Privileges {
                grant,
                privileges,
                class,
                objects,
                grantees,
            } => {
                for grantee in &grantees {
                    if grantee != PUBLIC && !data.users.contains_key(grantee) {
                        return Err(no_role(grantee));
                    }
                }
                let all = class.all();
                let privileges = privileges.unwrap_or_else(|| all.to_vec());
                if let Some(p) = privileges.iter().find(|p| !all.contains(p)) {
                    let kind = match class {
                        ObjectClass::Relation => "streams, topics and views",
                        ObjectClass::Subscription => "subscriptions",
                        ObjectClass::Schema => "schemas",
                    };
                    return Err(Error::plan(
                        "0LP01",
                        format!("privilege {} does not apply to {kind}", p.name()),
                    ));
                }
                let names = match objects {
                    GrantTargets::Named(names) => names,
                    GrantTargets::AllInSchema => data.relation_names(),
                };
                for name in &names {
                    let (access, kind) = access_mut(&mut new, class, name)?;
                    who.require_owner(&access.owner, kind, name)?;
                    for grantee in &grantees {
                        if grant {
                            access.grant(grantee, &privileges);
                        } else {
                            access.revoke(grantee, &privileges);
                        }
                    }
                }
                if grant { "GRANT" } else { "REVOKE" }
            }
            GrantStatement::Owner {
                class,
                name,
                owner,
                tag,
            } => {
                if owner != crate::catalog::access::SUPERUSER && !data.users.contains_key(&owner) {
                    return Err(no_role(&owner));
                }
                let (access, kind) = access_mut(&mut new, class, &name)?;
                who.require_owner(&access.owner, kind, &name)?;
                access.owner = owner;
                tag
            }
        };
        self.tables.catalog.commit(new, vec![]).await?;
        Ok(command(tag))
    }
}

/// The access of an object a grant names, and what kind of object it is.
fn access_mut<'a>(
    data: &'a mut CatalogData,
    class: ObjectClass,
    name: &str,
) -> Result<(&'a mut Access, &'static str)> {
    match class {
        ObjectClass::Schema if name == crate::catalog::PUBLIC_SCHEMA => {
            Ok((&mut data.schema, "schema"))
        }
        ObjectClass::Schema => Err(Error::plan(
            "3F000",
            format!("schema \"{name}\" does not exist"),
        )),
        ObjectClass::Subscription => data
            .subscriptions
            .get_mut(name)
            .map(|s| (&mut s.access, "subscription"))
            .ok_or_else(|| Error::plan("42704", format!("subscription \"{name}\" does not exist"))),
        ObjectClass::Relation => {
            let kind = data.relation(name).map(|r| r.kind()).ok_or_else(|| {
                Error::UnknownRelation(format!("relation \"{name}\" does not exist"))
            })?;
            // Which map holds it, from the relation (streams and tables share one).
            enum Map {
                Streams,
                Topics,
                External,
                Views,
            }
            let map = match data.relation(name) {
                Some(Relation::Stream(..)) => Map::Streams,
                Some(Relation::Topic(_)) => Map::Topics,
                Some(Relation::External(_)) => Map::External,
                Some(Relation::View(_)) | None => Map::Views,
            };
            let access = match map {
                Map::Streams => data.streams.get_mut(name).map(|s| &mut s.access),
                Map::Topics => data.topics.get_mut(name).map(|t| &mut t.access),
                Map::External => data.external_tables.get_mut(name).map(|t| &mut t.access),
                Map::Views => data.views.get_mut(name).map(|v| &mut v.access),
            };
            Ok((access.expect("the relation was just found"), kind))
        }
    }
}

pub(super) fn no_role(name: &str) -> Error {
    Error::plan("42704", format!("role \"{name}\" does not exist"))
}

/// What a user owns, for refusing to drop them while they do (as PostgreSQL does).
pub(super) fn owned_by(data: &CatalogData, user: &str) -> Vec<String> {
    let objects = data
        .accesses()
        .into_iter()
        .filter(|(_, access)| access.owner == user)
        .map(|(what, _)| what);
    let queries = data
        .queries
        .values()
        .filter(|q| q.owner == user)
        .map(|q| format!("continuous query {}", q.name));
    objects.chain(queries).collect()
}
