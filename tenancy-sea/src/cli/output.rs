//! Where a command's words go: its result to standard output (text, or one JSON document
//! with `--json`), progress and errors to standard error, and every message an operator
//! reads stripped of internals and URL passwords.

use super::Exit;
use crate::error::Error;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use std::io::Write;

/// What a command did: its JSON document, its text, and how the process ends.
pub(crate) struct Report {
    pub(crate) value: Value,
    pub(crate) text: String,
    pub(crate) exit: Exit,
}

impl Report {
    /// A command that did all it was asked.
    pub(crate) fn done(value: Value, text: impl Into<String>) -> Self {
        Report {
            value,
            text: text.into(),
            exit: Exit::Success,
        }
    }
}

/// How far a long operation is.
struct Steps {
    bar: Option<ProgressBar>,
    what: &'static str,
    total: usize,
    done: usize,
}

/// The two streams of a command and how to write to them.
pub(crate) struct Io<'w> {
    out: &'w mut dyn Write,
    err: &'w mut dyn Write,
    json: bool,
    terminal: bool,
    steps: Option<Steps>,
}

impl<'w> Io<'w> {
    pub(crate) fn new(
        out: &'w mut dyn Write,
        err: &'w mut dyn Write,
        json: bool,
        terminal: bool,
    ) -> Self {
        Io {
            out,
            err,
            json,
            terminal,
            steps: None,
        }
    }

    /// Starts a long operation of `total` steps: a progress bar on a terminal, a plain
    /// line per step on standard error otherwise.
    pub(crate) fn start(&mut self, what: &'static str, total: usize) {
        let bar = self.terminal.then(|| {
            let bar = ProgressBar::new(total as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} {bar:40} {pos}/{len} {wide_msg}")
            {
                bar.set_style(style);
            }
            bar.set_prefix(what);
            bar
        });
        self.steps = Some(Steps {
            bar,
            what,
            total,
            done: 0,
        });
    }

    /// One step of the long operation ended: `item`, and its error if it failed.
    pub(crate) fn step(&mut self, item: &str, failure: Option<&Error>) {
        self.step_shown(item, failure.map(message).as_deref());
    }

    /// [`step`](Self::step) with the failure's message shown already.
    pub(crate) fn step_shown(&mut self, item: &str, failure: Option<&str>) {
        let Some(steps) = self.steps.as_mut() else {
            return;
        };
        steps.done += 1;
        let line = match failure {
            None => format!("{} {}/{}: {item} done", steps.what, steps.done, steps.total),
            Some(error) => format!(
                "{} {}/{}: {item} FAILED: {error}",
                steps.what, steps.done, steps.total
            ),
        };
        match &steps.bar {
            Some(bar) => {
                if failure.is_some() {
                    bar.println(line);
                }
                bar.set_message(item.to_owned());
                bar.inc(1);
            }
            None => {
                let _ = writeln!(self.err, "{line}");
            }
        }
    }

    /// Ends the long operation.
    pub(crate) fn finish(&mut self) {
        if let Some(Steps { bar: Some(bar), .. }) = self.steps.take() {
            bar.finish_and_clear();
        }
    }

    /// Writes a command's result and returns its exit. (A closed standard output is not an
    /// error of the command's.)
    pub(crate) fn report(&mut self, report: Report) -> Exit {
        self.finish();
        if self.json {
            let mut value = report.value;
            if let Value::Object(map) = &mut value {
                map.insert("ok".to_owned(), json!(report.exit == Exit::Success));
                map.insert("exit_code".to_owned(), json!(report.exit.code()));
            }
            let _ = writeln!(self.out, "{value}");
        } else {
            let _ = writeln!(self.out, "{}", report.text.trim_end());
        }
        report.exit
    }

    /// Writes an error: its message on standard error, and under `--json` a document
    /// saying what kind it was.
    pub(crate) fn error(&mut self, error: &Error) -> Exit {
        self.finish();
        let exit = Exit::of(error);
        let text = message(error);
        let _ = writeln!(self.err, "error: {text}");
        if self.json {
            let value = json!({
                "ok": false,
                "exit_code": exit.code(),
                "error": { "kind": kind(error), "message": text },
            });
            let _ = writeln!(self.out, "{value}");
        }
        exit
    }
}

/// The kind of an error, for scripts: a stable word.
fn kind(error: &Error) -> &'static str {
    match error {
        Error::Config(_) => "config",
        Error::InvalidTenantId(_) | Error::InvalidIdentifier(_) => "invalid_argument",
        Error::UnknownTenant { .. } => "unknown_tenant",
        Error::TenantExists { .. } => "tenant_exists",
        Error::ShardExists { .. } => "shard_exists",
        Error::ShardNotEmpty { .. } => "shard_not_empty",
        Error::ShardDraining { .. } | Error::NoShardAvailable { .. } => "no_shard",
        Error::TenantMoving { .. } => "tenant_moving",
        Error::ShardUnavailable { .. } => "shard_unavailable",
        Error::Routing(_) => "routing",
        Error::Db(_) | Error::Shard { .. } => "database",
        _ => "failed",
    }
}

/// The message of `error` for an operator: its first line, any URL in it without its
/// password, at most 400 characters. (The library's errors carry no SQL; a driver's
/// message may spread over lines, quoting what it parsed.)
pub(crate) fn message(error: &Error) -> String {
    clean(&error.to_string())
}

/// `text`'s first line, its URLs' passwords hidden, cut at 400 characters.
pub(crate) fn clean(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let words: Vec<String> = first
        .split(' ')
        .map(|word| {
            if !word.contains("://") && !word.contains('@') {
                return word.to_owned();
            }
            let trim: &[char] = &['\'', '"', '(', ')', '<', '>', ',', ';', '`'];
            let core = word.trim_matches(trim);
            if core.is_empty() {
                return word.to_owned();
            }
            word.replace(core, &crate::redact::url(core))
        })
        .collect();
    let joined = words.join(" ");
    match joined.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &joined[..cut]),
        None => joined,
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn messages_hide_passwords_and_keep_one_line() {
        let shown = clean("cannot connect to 'postgres://app:s3cret@db/main': refused\nDETAIL x");
        assert_eq!(
            shown,
            "cannot connect to 'postgres://app:***@db/main': refused"
        );
        assert_eq!(clean("tenant 7 exists already"), "tenant 7 exists already");
        assert!(!clean("user:pw@host is down").contains("pw"));
    }
}
