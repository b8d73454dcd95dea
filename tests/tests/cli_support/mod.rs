//! Driving the CLI example's binary (`examples/cli.rs`, built as this package's `cli`
//! binary): one fleet per test, in a directory of its own or on a database of its own.

#![allow(dead_code)] // each test file uses its part

use assert_cmd::Command;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Output;

/// Where one test's fleet lives, as the binary's environment.
pub struct Fleet {
    pub dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

impl Fleet {
    /// A fleet of SQLite files in a fresh directory: a database per tenant, or with
    /// `sharded` SQLite shards.
    pub fn sqlite(sharded: bool) -> Fleet {
        let dir =
            std::env::temp_dir().join(format!("tenancy_cli_{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut env = vec![("TENANCY_CLI_DIR", dir.display().to_string())];
        if sharded {
            env.push(("TENANCY_CLI_LAYOUT", "sharded".to_owned()));
        }
        Fleet { dir, env }
    }

    /// A fleet on PostgreSQL: the catalog in `url`'s database, shards named `prefix` and
    /// their names.
    pub fn postgres(url: &str, prefix: &str) -> Fleet {
        let dir =
            std::env::temp_dir().join(format!("tenancy_cli_{}", uuid::Uuid::new_v4().simple()));
        Fleet {
            dir,
            env: vec![
                ("DATABASE_URL", url.to_owned()),
                ("TENANCY_CLI_PREFIX", prefix.to_owned()),
            ],
        }
    }

    /// The binary, with this fleet's environment and nothing of the caller's.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cli"));
        command
            .env_remove("DATABASE_URL")
            .env_remove("TENANCY_CLI_LAYOUT")
            .env_remove("TENANCY_CLI_PREFIX")
            .env_remove("TENANCY_CLI_DIR")
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    /// The binary as a plain process (to spawn several at once), with this fleet's
    /// environment and nothing of the caller's.
    pub fn std_command(&self) -> std::process::Command {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_cli"));
        for var in [
            "DATABASE_URL",
            "TENANCY_CLI_LAYOUT",
            "TENANCY_CLI_PREFIX",
            "TENANCY_CLI_DIR",
        ] {
            command.env_remove(var);
        }
        command.envs(self.env.iter().map(|(k, v)| (*k, v.as_str())));
        command
    }

    /// Runs the binary with `args`.
    pub fn run(&self, args: &[&str]) -> Run {
        let output = self.command().args(args).output().unwrap();
        Run::from(output, args)
    }

    /// Runs it with `--json` and `args`, and parses the document.
    pub fn json(&self, args: &[&str]) -> (Run, Value) {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let run = self.run(&all);
        let value: Value = serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| {
            panic!(
                "`{}` printed no JSON document ({e}):\n{}",
                all.join(" "),
                run.stdout
            )
        });
        (run, value)
    }

    /// The tenant ids `tenants list` names.
    pub fn tenants(&self) -> Vec<String> {
        let (run, value) = self.json(&["tenants", "list"]);
        assert_eq!(run.code, 0, "{run:?}");
        value["tenants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    }

    /// A SQLite file of this fleet.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub args: String,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    fn from(output: Output, args: &[&str]) -> Run {
        Run {
            args: args.join(" "),
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing the run when it differs.
    pub fn code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code, expected,
            "`{}` exited {}:\n{self:#?}",
            self.args, self.code
        );
        self
    }
}

/// Runs SQL on a SQLite file (blocking; a fresh connection).
pub async fn sqlite(path: &Path, sql: &str) {
    use sea_orm::ConnectionTrait;
    let conn = sea_orm::Database::connect(format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    conn.execute_unprepared(sql).await.unwrap();
    let _ = conn.close().await;
}

/// One value of a query on a SQLite file.
pub async fn sqlite_count(path: &Path, sql: &str) -> i64 {
    use sea_orm::{ConnectionTrait, Statement};
    let conn = sea_orm::Database::connect(format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    let row = conn
        .query_one_raw(Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            sql.to_owned(),
        ))
        .await
        .unwrap()
        .unwrap();
    let n: i64 = row.try_get_by_index(0).unwrap();
    let _ = conn.close().await;
    n
}
