//! `CREATE USER`, `ALTER USER … PASSWORD` and `DROP USER`: who may log in with a password.

use super::{Database, Output, command};
use crate::auth::{self, SUPERUSER};
use crate::error::{Error, Result};
use crate::sql::parser::UserStatement;

impl Database {
    pub(super) async fn manage_user(
        &self,
        statement: UserStatement,
        current: Option<&str>,
        notices: &mut Vec<String>,
    ) -> Result<Output> {
        if self.config.password_auth && current != Some(SUPERUSER) {
            return Err(Error::plan(
                "42501",
                format!("only the superuser \"{SUPERUSER}\" may create, change or drop users"),
            ));
        }
        let _ddl = self.tables.catalog.ddl_lock().await;
        let mut data = (*self.tables.catalog.snapshot()).clone();
        let tag = match statement {
            UserStatement::Create {
                name,
                if_not_exists,
                password,
            } => {
                if data.users.contains_key(&name) {
                    let message = format!("role \"{name}\" already exists");
                    if if_not_exists {
                        notices.push(format!("{message}, skipping"));
                        return Ok(command("CREATE ROLE"));
                    }
                    return Err(Error::plan("42710", message));
                }
                data.users
                    .insert(name.clone(), auth::user(&name, &password)?);
                "CREATE ROLE"
            }
            UserStatement::Alter { name, password } => {
                if !data.users.contains_key(&name) {
                    return Err(no_role(&name));
                }
                data.users
                    .insert(name.clone(), auth::user(&name, &password)?);
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
                    if data.users.remove(&name).is_none() {
                        if !if_exists {
                            return Err(no_role(&name));
                        }
                        notices.push(format!("role \"{name}\" does not exist, skipping"));
                    }
                }
                "DROP ROLE"
            }
        };
        self.tables.catalog.commit(data, vec![]).await?;
        Ok(command(tag))
    }
}

fn no_role(name: &str) -> Error {
    Error::plan("42704", format!("role \"{name}\" does not exist"))
}
