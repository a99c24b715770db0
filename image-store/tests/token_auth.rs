//! Bearer-token auth: `docker-registry` configured with `auth: token`, and a tiny token server
//! in the test that checks basic credentials and issues RS256 JWTs signed by a self-signed
//! certificate the registry trusts.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use image_store::manifest::OCI_LAYER_GZIP;
use image_store::progress::ProgressMode;
use image_store::pull::pull;
use image_store::{Credentials, ImageRef, RegistryOptions, Store};
use openssl::asn1::Asn1Time;
use openssl::hash::MessageDigest;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::{X509Builder, X509NameBuilder};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

const SERVICE: &str = "peapod-test-registry";
const ISSUER: &str = "peapod-test-issuer";

fn cert_and_key() -> (Vec<u8>, PKey<Private>) {
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "peapod test token signer")
        .unwrap();
    let name = name.build();
    let mut b = X509Builder::new().unwrap();
    b.set_version(2).unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(2).unwrap())
        .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    (b.build().to_der().unwrap(), key)
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn jwt(cert_der: &[u8], key: &PKey<Private>, sub: &str, access: serde_json::Value) -> String {
    let header = serde_json::json!({"typ":"JWT","alg":"RS256","x5c":[STANDARD.encode(cert_der)]});
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = serde_json::json!({"iss":ISSUER,"sub":sub,"aud":SERVICE,"exp":now+300,"nbf":now-30,
        "iat":now-30,"jti":format!("{now}-{sub}"),"access":access});
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut signer = Signer::new(MessageDigest::sha256(), key).unwrap();
    signer.update(signing_input.as_bytes()).unwrap();
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(signer.sign_to_vec().unwrap())
    )
}

/// Serves `GET /token?service=…&scope=…`: valid basic credentials get every scope asked for,
/// anonymous callers get a token with no access, wrong credentials get 401.
fn token_server(user: &'static str, pass: &'static str) -> (u16, Vec<u8>) {
    let (cert_der, key) = cert_and_key();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let key = Arc::new(key);
    let cert = cert_der.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut authz = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((k, v)) = line.split_once(':') {
                    if k.eq_ignore_ascii_case("authorization") {
                        authz = Some(v.trim().to_string());
                    }
                }
            }
            let target = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
            let scopes: Vec<String> = query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("scope="))
                .map(percent_decode)
                .collect();
            let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{pass}")));
            let (status, body) = match authz {
                Some(a) if a == expected => {
                    let access: Vec<serde_json::Value> = scopes
                        .iter()
                        .filter_map(|s| {
                            let mut parts = s.splitn(3, ':');
                            let (t, name, actions) = (parts.next()?, parts.next()?, parts.next()?);
                            Some(serde_json::json!({"type":t,"name":name,"actions":actions.split(',').collect::<Vec<_>>()}))
                        })
                        .collect();
                    let t = jwt(&cert, &key, user, serde_json::Value::Array(access));
                    (
                        "200 OK",
                        serde_json::json!({"token":t,"access_token":t,"expires_in":300})
                            .to_string(),
                    )
                }
                Some(_) => (
                    "401 Unauthorized",
                    r#"{"details":"bad credentials"}"#.to_string(),
                ),
                None => {
                    let t = jwt(&cert, &key, "", serde_json::json!([]));
                    (
                        "200 OK",
                        serde_json::json!({"token":t,"expires_in":300}).to_string(),
                    )
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (port, cert_der)
}

#[tokio::test]
async fn bearer_token_auth_through_a_token_server() {
    let work = tempfile::tempdir().unwrap();
    let (tport, cert_der) = token_server("peapod", "t0ken");
    let bundle = work.path().join("bundle.pem");
    let pem = openssl::x509::X509::from_der(&cert_der)
        .unwrap()
        .to_pem()
        .unwrap();
    std::fs::write(&bundle, pem).unwrap();
    let auth = format!(
        "  token:\n    realm: http://127.0.0.1:{tport}/token\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
        bundle.display()
    );
    let reg = Registry::start_with_auth(&auth, ("peapod", "t0ken"));
    let mut l = Layout::new(&work.path().join("l"));
    let m = l.image(
        &[(
            OCI_LAYER_GZIP,
            gzip(&LayerBuilder::default().file("secret", b"tokened").tar()),
        )],
        config(&["x"]),
    );
    l.tag(&m, "v1");
    reg.push(&l.dir, "v1", "team/tok:v1", false);

    let store = Store::open(&work.path().join("root")).unwrap();
    let r = ImageRef::parse(&format!("{}/team/tok:v1", reg.host())).unwrap();
    let mut o = RegistryOptions {
        progress: ProgressMode::Quiet,
        ..Default::default()
    };
    // Anonymous: the token server hands out a token without access; the registry refuses it.
    let err = pull(&store, &r, &o).await.unwrap_err();
    assert!(err.to_string().contains(&reg.host()), "{err}");
    // Wrong password: the token server refuses.
    o.credentials = Credentials::Basic {
        username: "peapod".into(),
        password: "nope".into(),
    };
    assert!(pull(&store, &r, &o).await.is_err());
    assert!(store.list().unwrap().is_empty());
    // Right password: token issued, image pulled.
    o.credentials = Credentials::Basic {
        username: "peapod".into(),
        password: "t0ken".into(),
    };
    let rec = pull(&store, &r, &o).await.unwrap();
    assert_eq!(rec.manifest, m.digest);
    let h = store.image(&r).unwrap();
    assert_eq!(std::fs::read(h.rootfs.join("secret")).unwrap(), b"tokened");
}
