//! `CREATE USER`, `ALTER USER` and `DROP USER` (and their `ROLE` spellings): who may log in,
//! with what password, and whether as a superuser.

use super::grants::{no_role, owned_by};
use super::{Database, Output, command};
use crate::auth;
use crate::catalog::Principal;
use crate::catalog::access::{PREDEFINED_ROLES, PUBLIC, SUPERUSER};
use crate::error::{Error, Result};
use crate::sql::parser::{UserOptions, UserStatement};

impl Database {
    pub(super) async fn manage_user(
        &self,
        statement: UserStatement,
        who: &Principal,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        // Users change their own password; everything else is for superusers.
        let own_password = matches!(&statement, UserStatement::Alter { name, options }
            if *name == who.name && options.superuser.is_none());
        if !(who.superuser || own_password) {
            return Err(Error::plan(
                "42501",
                "permission denied to create, change or drop users: only superusers may",
            ));
        }
        let _ddl = self.tables.catalog.ddl_lock().await;
        let mut data = (*self.tables.catalog.snapshot()).clone();
        let tag = match statement {
            UserStatement::Create {
                name,
                if_not_exists,
                options,
            } => {
                if name.eq_ignore_ascii_case(PUBLIC) || PREDEFINED_ROLES.contains(&name.as_str()) {
                    return Err(Error::plan(
                        "42939",
                        format!("role name \"{name}\" is reserved"),
                    ));
                }
                if data.users.contains_key(&name) {
                    let message = format!("role \"{name}\" already exists");
                    if if_not_exists {
                        notices.push(format!("{message}, skipping"));
                        return Ok(command("CREATE ROLE"));
                    }
                    return Err(Error::plan("42710", message));
                }
                let mut user = auth::user(&name, options.password.clone().flatten().as_deref())?;
                user.superuser = options.superuser.unwrap_or(false);
                data.users.insert(name, user);
                "CREATE ROLE"
            }
            UserStatement::Alter { name, options } => {
                let Some(existing) = data.users.get(&name).cloned() else {
                    return Err(no_role(&name));
                };
                let UserOptions {
                    password,
                    superuser,
                } = options;
                let mut user = match password {
                    Some(password) => {
                        let mut fresh = auth::user(&name, password.as_deref())?;
                        fresh.created_at_ms = existing.created_at_ms;
                        fresh.superuser = existing.superuser;
                        fresh.roles = existing.roles.clone();
                        fresh
                    }
                    None => existing,
                };
                if let Some(superuser) = superuser {
                    if name == SUPERUSER && !superuser {
                        return Err(Error::plan(
                            "42501",
                            format!("the bootstrap superuser \"{SUPERUSER}\" stays a superuser"),
                        ));
                    }
                    user.superuser = superuser;
                }
                data.users.insert(name, user);
                "ALTER ROLE"
            }
            UserStatement::Drop { names, if_exists } => {
                for name in names {
                    if name == SUPERUSER {
                        return Err(Error::plan(
                            "42501",
                            format!("the superuser \"{SUPERUSER}\" cannot be dropped"),
                        ));
                    }
                    if !data.users.contains_key(&name) {
                        if !if_exists {
                            return Err(no_role(&name));
                        }
                        notices.push(format!("role \"{name}\" does not exist, skipping"));
                        continue;
                    }
                    let owned = owned_by(&data, &name);
                    if !owned.is_empty() {
                        return Err(Error::Dependent(format!(
                            "role \"{name}\" cannot be dropped because it owns {}; drop those first",
                            owned.join(", ")
                        )));
                    }
                    data.users.remove(&name);
                    for stripped in strip_grants(&mut data, &name) {
                        notices.push(format!("revoked the privileges {name} had on {stripped}"));
                    }
                }
                "DROP ROLE"
            }
        };
        self.tables.catalog.commit(data, vec![]).await?;
        Ok(command(tag))
    }
}

/// Removes a dropped user's grants; returns the objects they had any on.
fn strip_grants(data: &mut crate::catalog::CatalogData, user: &str) -> Vec<String> {
    data.accesses_mut()
        .into_iter()
        .filter_map(|(what, access)| access.grants.remove(user).map(|_| what))
        .collect()
}
