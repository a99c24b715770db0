//! The argv a container runs: Kubernetes' `command`/`args` versus image `ENTRYPOINT`/`CMD` table.
//!
//! | `command` | `args` | runs                     |
//! |-----------|--------|--------------------------|
//! | unset     | unset  | ENTRYPOINT + CMD         |
//! | set       | unset  | command (CMD ignored)    |
//! | unset     | set    | ENTRYPOINT + args        |
//! | set       | set    | command + args           |
//!
//! As in Kubernetes an empty list counts as unset. `$(VAR)` references in `command` and `args`
//! (never in the image's ENTRYPOINT/CMD) expand from the container's spec env.

use crate::env::{expand, lookup_in};

/// Why no argv could be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Neither the spec nor the image says what to run.
    #[error("no command specified: the pod sets neither command nor args and the image has no entrypoint or cmd")]
    NothingToRun,
}

fn set(list: Option<&[String]>) -> Option<&[String]> {
    list.filter(|l| !l.is_empty())
}

/// Builds the argv from the image config and the spec, expanding `$(VAR)` in the spec's
/// `command` and `args` with `env` (the container's spec env, already resolved).
pub fn resolve_command(
    entrypoint: &[String],
    cmd: &[String],
    command: Option<&[String]>,
    args: Option<&[String]>,
    env: &[(String, String)],
) -> Result<Vec<String>, CommandError> {
    let expand_all = |list: &[String]| -> Vec<String> {
        list.iter()
            .map(|item| expand(item, |name| lookup_in(env, name)))
            .collect()
    };
    let argv: Vec<String> = match (set(command), set(args)) {
        (None, None) => entrypoint.iter().chain(cmd).cloned().collect(),
        (Some(command), None) => expand_all(command),
        (None, Some(args)) => entrypoint.iter().cloned().chain(expand_all(args)).collect(),
        (Some(command), Some(args)) => {
            let mut argv = expand_all(command);
            argv.extend(expand_all(args));
            argv
        }
    };
    if argv.is_empty() {
        return Err(CommandError::NothingToRun);
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    /// The table from the Kubernetes documentation ("Notes" of "Define a Command and Arguments").
    #[test]
    fn kubernetes_table() {
        let ep = v(&["/ep-1"]);
        let cmd = v(&["foo", "bar"]);
        type Case = (Option<Vec<String>>, Option<Vec<String>>, Vec<String>);
        let cases: Vec<Case> = vec![
            (None, None, v(&["/ep-1", "foo", "bar"])),
            (Some(v(&["/ep-2"])), None, v(&["/ep-2"])),
            (None, Some(v(&["zoo", "boo"])), v(&["/ep-1", "zoo", "boo"])),
            (
                Some(v(&["/ep-2"])),
                Some(v(&["zoo", "boo"])),
                v(&["/ep-2", "zoo", "boo"]),
            ),
            (Some(vec![]), Some(vec![]), v(&["/ep-1", "foo", "bar"])),
            (Some(vec![]), Some(v(&["x"])), v(&["/ep-1", "x"])),
        ];
        for (command, args, want) in cases {
            let got = resolve_command(&ep, &cmd, command.as_deref(), args.as_deref(), &[]);
            assert_eq!(got, Ok(want), "command {command:?} args {args:?}");
        }
    }

    #[test]
    fn spec_lists_expand_but_image_lists_do_not() {
        let env = vec![
            ("os".to_string(), "ubuntu".to_string()),
            ("debug".to_string(), "on".to_string()),
        ];
        let ep = v(&["$(os)"]);
        let got = resolve_command(
            &ep,
            &[],
            None,
            Some(&v(&["$(os), $(debug)", "$$(os)", "$(nope)"])),
            &env,
        );
        assert_eq!(got, Ok(v(&["$(os)", "ubuntu, on", "$(os)", "$(nope)"])));
        let got = resolve_command(
            &[],
            &[],
            Some(&v(&["/bin/echo"])),
            Some(&v(&["$(os), $(debug)"])),
            &env,
        );
        assert_eq!(got, Ok(v(&["/bin/echo", "ubuntu, on"])));
    }

    #[test]
    fn nothing_to_run_is_an_error() {
        assert_eq!(
            resolve_command(&[], &[], None, None, &[]),
            Err(CommandError::NothingToRun)
        );
        assert_eq!(
            resolve_command(&[], &[], Some(&[]), None, &[]),
            Err(CommandError::NothingToRun)
        );
    }
}
