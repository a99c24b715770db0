//! Resolves `user[:group]` (numeric, or names from the rootfs `/etc/passwd` and `/etc/group`).

/// Errors resolving a user.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// The name is not in the file.
    #[error("unknown {kind} {name:?} in the image")]
    Unknown {
        /// `user` or `group`.
        kind: &'static str,
        /// Name.
        name: String,
    },
}

/// Resolved identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

fn lookup(file: &str, name: &str, id_field: usize) -> Option<(u32, Option<u32>)> {
    file.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.first() != Some(&name) {
            return None;
        }
        let id = f.get(id_field)?.parse().ok()?;
        let gid = f.get(3).and_then(|g| g.parse().ok());
        Some((id, gid))
    })
}

/// Resolves `spec` against the contents of `/etc/passwd` and `/etc/group`.
pub fn resolve(spec: Option<&str>, passwd: &str, group: &str) -> Result<Ids, UserError> {
    let Some(spec) = spec.filter(|s| !s.is_empty()) else {
        return Ok(Ids { uid: 0, gid: 0 });
    };
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let (uid, primary) = match user.parse::<u32>() {
        Ok(uid) => (
            uid,
            passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2)?.parse::<u32>().ok()? == uid).then(|| f.get(3)?.parse().ok())?
            }),
        ),
        Err(_) => {
            let (uid, gid) = lookup(passwd, user, 2).ok_or_else(|| UserError::Unknown {
                kind: "user",
                name: user.to_string(),
            })?;
            (uid, gid)
        }
    };
    let gid = match grp {
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                lookup(group, g, 2)
                    .ok_or_else(|| UserError::Unknown {
                        kind: "group",
                        name: g.to_string(),
                    })?
                    .0
            }
        },
        None => primary.unwrap_or(0),
    };
    Ok(Ids { uid, gid })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:34:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:\n";

    #[test]
    fn resolves_names_and_numbers() {
        assert_eq!(resolve(None, PASSWD, GROUP), Ok(Ids { uid: 0, gid: 0 }));
        assert_eq!(
            resolve(Some("www"), PASSWD, GROUP),
            Ok(Ids { uid: 33, gid: 34 })
        );
        assert_eq!(
            resolve(Some("33"), PASSWD, GROUP),
            Ok(Ids { uid: 33, gid: 34 })
        );
        assert_eq!(
            resolve(Some("1000"), PASSWD, GROUP),
            Ok(Ids { uid: 1000, gid: 0 })
        );
        assert_eq!(
            resolve(Some("www:staff"), PASSWD, GROUP),
            Ok(Ids { uid: 33, gid: 50 })
        );
        assert_eq!(resolve(Some("7:8"), "", ""), Ok(Ids { uid: 7, gid: 8 }));
        assert!(resolve(Some("nobody"), PASSWD, GROUP).is_err());
        assert!(resolve(Some("www:nogroup"), PASSWD, GROUP).is_err());
    }
}
