//! Environment variables: Kubernetes `$(VAR)` expansion and the image-env/spec-env merge.
//!
//! The expansion follows Kubernetes' `third_party/forked/golang/expansion` exactly:
//! `$(NAME)` is replaced by the value of `NAME` when it is defined and left as written
//! otherwise, `$$` is an escaped `$` (so `$$(NAME)` yields the literal `$(NAME)`), a `$`
//! followed by anything else is kept, and an unterminated `$(` is kept as written.

/// Expands `$(VAR)` references in `input` using `lookup`; see the module docs for the rules.
pub fn expand<F>(input: &str, lookup: F) -> String
where
    F: Fn(&str) -> Option<String>,
{
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut cursor = 0;
    while cursor < bytes.len() {
        if bytes[cursor] == b'$' && cursor + 1 < bytes.len() {
            out.push_str(&input[checkpoint..cursor]);
            let rest = &input[cursor + 1..];
            let advance = match rest.as_bytes()[0] {
                b'$' => {
                    out.push('$');
                    1
                }
                b'(' => match rest.find(')') {
                    Some(close) => {
                        let name = &rest[1..close];
                        match lookup(name) {
                            Some(value) => out.push_str(&value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        close + 1
                    }
                    None => {
                        out.push_str("$(");
                        1
                    }
                },
                _ => {
                    // Not an expression: keep the `$` and the character after it.
                    let ch_len = rest.chars().next().map_or(1, char::len_utf8);
                    out.push('$');
                    out.push_str(&rest[..ch_len]);
                    ch_len
                }
            };
            cursor += advance;
            checkpoint = cursor + 1;
        }
        cursor += 1;
    }
    if checkpoint < input.len() {
        out.push_str(&input[checkpoint..]);
    }
    out
}

/// Parses an OCI image `Env` list (`KEY=VALUE`); entries without `=` get an empty value.
pub fn parse_env_list(list: &[String]) -> Vec<(String, String)> {
    list.iter()
        .map(|entry| match entry.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (entry.clone(), String::new()),
        })
        .collect()
}

/// Sets `name` to `value` in an ordered env list, replacing an earlier definition in place.
fn set(env: &mut Vec<(String, String)>, name: &str, value: String) {
    match env.iter_mut().find(|(k, _)| k == name) {
        Some(slot) => slot.1 = value,
        None => env.push((name.to_string(), value)),
    }
}

/// Merges the image env (the base) with the spec env (which overrides it), as kubelet and the
/// runtime do together. Each spec value is expanded against the spec variables defined before
/// it, exactly as kubelet does; the image env is not visible to `$(VAR)` expansion because
/// kubelet expands before the runtime merges the image env.
pub fn resolve_env(
    image_env: &[(String, String)],
    spec_env: &[(String, String)],
) -> Vec<(String, String)> {
    let mut defined: Vec<(String, String)> = Vec::with_capacity(spec_env.len());
    for (name, raw) in spec_env {
        let value = expand(raw, |var| lookup_in(&defined, var));
        set(&mut defined, name, value);
    }
    let mut merged = image_env.to_vec();
    for (name, value) in defined {
        set(&mut merged, &name, value);
    }
    merged
}

/// Looks a variable up in an ordered env list (the last definition wins).
pub fn lookup_in(env: &[(String, String)], name: &str) -> Option<String> {
    env.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "VAR_A" => Some("A".into()),
            "VAR_B" => Some("B".into()),
            "VAR_C" => Some("C".into()),
            "VAR_REF" => Some("$(VAR_A)".into()),
            "VAR_EMPTY" => Some(String::new()),
            "os" => Some("ubuntu".into()),
            "debug" => Some("on".into()),
            _ => None,
        }
    }

    /// The cases of Kubernetes' expansion_test.go (TestMapReference/TestMapping).
    #[test]
    fn kubernetes_expansion_table() {
        let cases = [
            ("$(VAR_A)", "A"),
            ("___$(VAR_B)___", "___B___"),
            ("$(VAR_A)-$(VAR_A)", "A-A"),
            ("f000-$$VAR_A", "f000-$VAR_A"),
            ("foo\\$(VAR_C)bar", "foo\\Cbar"),
            ("foo\\\\$(VAR_C)bar", "foo\\\\Cbar"),
            ("foo\\\\\\\\$(VAR_A)bar", "foo\\\\\\\\Abar"),
            ("$(VAR_A)$(VAR_B)$(VAR_C)", "ABC"),
            ("$(VAR_REF)", "$(VAR_A)"),
            ("foo$(VAR_EMPTY)bar", "foobar"),
            ("$(VAR_A", "$(VAR_A"),
            ("$(VAR_DNE)", "$(VAR_DNE)"),
            ("$$$$$$(BIG_MONEY)", "$$$(BIG_MONEY)"),
            ("$$$$$$(VAR_A)", "$$$(VAR_A)"),
            ("$$$$$$$(GOOD_ODDS)", "$$$$(GOOD_ODDS)"),
            ("$$$$$$$(VAR_A)", "$$$A"),
            ("$$(VAR_A)", "$(VAR_A)"),
            ("$$$$(VAR_A)", "$$(VAR_A)"),
            ("$$$$$$$$(VAR_A)", "$$$$(VAR_A)"),
            ("$()", "$()"),
            ("$", "$"),
            ("$$", "$"),
            ("foo$", "foo$"),
            ("$VAR_A", "$VAR_A"),
            ("$(VAR_A)$", "A$"),
            ("${VAR_A}", "${VAR_A}"),
            ("$(os), $(debug)", "ubuntu, on"),
            ("héllo $(VAR_A) wörld $é", "héllo A wörld $é"),
            ("(VAR_A)", "(VAR_A)"),
            ("$(VAR_A)(VAR_B)", "A(VAR_B)"),
            ("$(VAR_A )", "$(VAR_A )"),
            ("", ""),
        ];
        for (input, want) in cases {
            assert_eq!(expand(input, vars), want, "input {input:?}");
        }
    }

    #[test]
    fn resolve_env_expands_from_earlier_spec_vars_only() {
        let image = parse_env_list(&["PATH=/bin".into(), "HOME=/root".into(), "IMG=i".into()]);
        let spec = vec![
            ("A".to_string(), "a".to_string()),
            ("B".to_string(), "$(A)-$(C)-$(IMG)".to_string()),
            ("C".to_string(), "c".to_string()),
            ("HOME".to_string(), "/home/$(A)".to_string()),
            ("A".to_string(), "$(A)$(A)".to_string()),
        ];
        let env = resolve_env(&image, &spec);
        assert_eq!(
            env,
            vec![
                ("PATH".into(), "/bin".into()),
                ("HOME".into(), "/home/a".into()),
                ("IMG".into(), "i".into()),
                ("A".into(), "aa".into()),
                ("B".into(), "a-$(C)-$(IMG)".into()),
                ("C".into(), "c".into()),
            ]
        );
    }

    #[test]
    fn parse_env_list_splits_on_first_equals() {
        let env = parse_env_list(&["A=b=c".into(), "EMPTY=".into(), "BARE".into()]);
        assert_eq!(
            env,
            vec![
                ("A".into(), "b=c".into()),
                ("EMPTY".into(), String::new()),
                ("BARE".into(), String::new())
            ]
        );
    }

    proptest! {
        /// Text without `$` is never changed.
        #[test]
        fn no_dollar_is_identity(s in "[^$]*") {
            prop_assert_eq!(expand(&s, vars), s);
        }

        /// With no variable defined, expansion only collapses `$$` pairs.
        #[test]
        fn undefined_vars_only_unescape(s in "[a-z()$]{0,40}") {
            let expanded = expand(&s, |_| None);
            prop_assert!(expanded.len() <= s.len());
            if !s.contains("$$") {
                prop_assert_eq!(expanded, s);
            }
        }

        /// A reference to a defined name in arbitrary surroundings expands to its value.
        #[test]
        fn defined_reference_expands(prefix in "[a-z ]{0,10}", suffix in "[a-z ]{0,10}") {
            let input = format!("{prefix}$(VAR_B){suffix}");
            prop_assert_eq!(expand(&input, vars), format!("{prefix}B{suffix}"));
        }

        /// Expansion never panics on arbitrary unicode input.
        #[test]
        fn never_panics(s in "\\PC*") {
            let _ = expand(&s, vars);
        }
    }
}
