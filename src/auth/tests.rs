//! The token matrix: every way a token can be wrong is refused with its own code; valid
//! tokens are accepted. The same decisions serve every protocol (their tests check that
//! each front-end asks).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

use super::*;

const SECRET: &str = "test-secret-test-secret-test-secret";

fn keys(name: &str) -> String {
    format!("{}/tests/data/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn hs256(require: bool) -> Auth {
    Auth::new(&AuthConfig {
        jwt_secret: SECRET.to_owned(),
        require_publish: require,
        require_play: require,
        ..AuthConfig::default()
    })
    .expect("valid config")
}

fn claims(roles: &[Role], stream: Option<&str>) -> Claims {
    let now = unix_now();
    Claims {
        sub: "alice".to_owned(),
        name: Some("Alice".to_owned()),
        roles: roles.to_vec(),
        stream: stream.map(str::to_owned),
        exp: now + 3600,
        nbf: None,
        iat: Some(now),
        iss: None,
        aud: None,
    }
}

fn sign(claims: &Claims) -> String {
    encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("sign")
}

fn key(s: &str) -> StreamKey {
    StreamKey::parse(s).expect("valid key")
}

fn code(result: Result<Option<Identity>, AuthError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

#[test]
fn the_token_matrix() {
    let auth = hs256(true);
    let stream = key("live/alice");
    let check = |token: Option<&str>, action| code(auth.check(token, action, Some(&stream)));
    let publisher = sign(&claims(&[Role::Publisher], Some("live/alice")));

    assert_eq!(check(Some(&publisher), Action::Publish), "ok");
    assert_eq!(check(Some(&publisher), Action::Play), "ok");
    assert_eq!(check(None, Action::Publish), "token_missing");
    assert_eq!(check(Some(""), Action::Play), "token_missing");

    let mut expired = claims(&[Role::Publisher], None);
    expired.exp = unix_now() - 3600;
    assert_eq!(check(Some(&sign(&expired)), Action::Publish), "token_expired");

    let mut early = claims(&[Role::Publisher], None);
    early.nbf = Some(unix_now() + 3600);
    assert_eq!(check(Some(&sign(&early)), Action::Publish), "token_not_yet_valid");

    let other_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims(&[Role::Publisher], None),
        &EncodingKey::from_secret(b"another secret"),
    )
    .expect("sign");
    assert_eq!(check(Some(&other_secret), Action::Publish), "token_invalid");

    // alg: none, with the claims intact and no signature.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body =
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&[Role::Admin], None)).expect("json"));
    let none = format!("{header}.{body}.");
    assert_eq!(check(Some(&none), Action::Publish), "token_invalid");

    let viewer = sign(&claims(&[Role::Viewer], None));
    assert_eq!(check(Some(&viewer), Action::Publish), "forbidden_role");
    assert_eq!(check(Some(&viewer), Action::Play), "ok");
    assert_eq!(check(Some(&publisher), Action::Admin), "forbidden_role");

    let bob = sign(&claims(&[Role::Publisher], Some("live/bob")));
    assert_eq!(check(Some(&bob), Action::Publish), "forbidden_stream");
    let app = sign(&claims(&[Role::Publisher], Some("live/*")));
    assert_eq!(check(Some(&app), Action::Publish), "ok");

    for garbage in ["garbage", "a.b.c", "....", "\u{0}\u{1}", "eyJ.eyJ.x"] {
        assert_eq!(check(Some(garbage), Action::Play), "token_invalid", "{garbage:?}");
    }
    let huge = "a".repeat(64 * 1024);
    assert_eq!(check(Some(&huge), Action::Play), "token_too_large");

    let admin = sign(&claims(&[Role::Admin], None));
    assert_eq!(check(Some(&admin), Action::Admin), "ok");
    let identity = auth.check(Some(&admin), Action::Admin, None).expect("ok").expect("identity");
    assert_eq!((identity.user.as_str(), identity.name.as_deref()), ("alice", Some("Alice")));
}

/// The message of a refusal.
fn message(result: Result<Option<Identity>, AuthError>) -> String {
    result.err().map(|e| e.to_string()).unwrap_or_default()
}

/// A token with `json` as its claims, signed with [`SECRET`].
fn sign_json(json: serde_json::Value) -> String {
    encode(&Header::new(Algorithm::HS256), &json, &EncodingKey::from_secret(SECRET.as_bytes()))
        .expect("sign")
}

#[test]
fn refusals_say_which_claim_and_why() {
    let auth = hs256(true);
    let stream = key("live/alice");
    let check = |token: &str| message(auth.check(Some(token), Action::Play, Some(&stream)));
    let exp = unix_now() + 600;
    let said = check(&sign_json(serde_json::json!({"sub": "a", "roles": ["viewer"]})));
    assert!(said.contains("exp claim is missing"), "{said}");
    let said = check(&sign_json(serde_json::json!({"roles": ["viewer"], "exp": exp})));
    assert!(said.contains("sub claim is missing"), "{said}");
    let said = check(&sign_json(serde_json::json!({"sub": "a", "roles": ["root"], "exp": exp})));
    assert!(said.contains("roles") && said.contains("root"), "{said}");
    let said = check(&sign_json(serde_json::json!({"sub": "a", "roles": "viewer", "exp": exp})));
    assert!(said.contains("roles claim is malformed"), "{said}");
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(br#"{"sub":"a","roles":["admin"],"exp":9999999999}"#);
    let said = check(&format!("{header}.{body}."));
    assert!(said.contains("alg none"), "{said}");
}

#[test]
fn errors_never_contain_the_token() {
    let auth = hs256(true);
    let mut expired = claims(&[Role::Publisher], None);
    expired.exp = unix_now() - 3600;
    let token = sign(&expired);
    let error = auth.check(Some(&token), Action::Publish, None).expect_err("expired");
    assert!(!error.to_string().contains(&token));
    assert!(!format!("{error:?}").contains(&token));
}

#[test]
fn rs256_tokens_verify_and_an_hs256_token_signed_with_the_public_key_does_not() {
    let auth = Auth::new(&AuthConfig {
        algorithm: JwtAlgorithm::Rs256,
        public_key: keys("rsa-public.pem"),
        private_key: keys("rsa-private.pem"),
        require_publish: true,
        ..AuthConfig::default()
    })
    .expect("valid config");
    let good = auth.mint(&claims(&[Role::Publisher], None)).expect("mint");
    assert_eq!(code(auth.check(Some(&good), Action::Publish, None)), "ok");

    // Algorithm confusion: the public key (which attackers know) used as an HMAC secret.
    let public = std::fs::read(keys("rsa-public.pem")).expect("public key");
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims(&[Role::Admin], None),
        &EncodingKey::from_secret(&public),
    )
    .expect("sign");
    assert_eq!(code(auth.check(Some(&forged), Action::Publish, None)), "token_invalid");
}

#[test]
fn eddsa_and_es256_keys_work() {
    for (algorithm, public, private) in [
        (JwtAlgorithm::EdDsa, "ed25519-public.pem", "ed25519-private.pem"),
        (JwtAlgorithm::Es256, "ec-public.pem", "ec-private.pem"),
    ] {
        let auth = Auth::new(&AuthConfig {
            algorithm,
            public_key: keys(public),
            private_key: keys(private),
            require_play: true,
            ..AuthConfig::default()
        })
        .expect("valid config");
        let token = auth.mint(&claims(&[Role::Viewer], None)).expect("mint");
        assert_eq!(code(auth.check(Some(&token), Action::Play, None)), "ok", "{algorithm}");
    }
}

#[test]
fn issuer_and_audience_are_checked_when_configured() {
    let auth = Auth::new(&AuthConfig {
        jwt_secret: SECRET.to_owned(),
        issuer: "https://id.example".to_owned(),
        audience: "zenlive".to_owned(),
        require_play: true,
        ..AuthConfig::default()
    })
    .expect("valid config");
    let mut c = claims(&[Role::Viewer], None);
    assert_eq!(code(auth.check(Some(&sign(&c)), Action::Play, None)), "token_invalid");
    c.iss = Some("https://id.example".into());
    c.aud = Some("zenlive".into());
    assert_eq!(code(auth.check(Some(&sign(&c)), Action::Play, None)), "ok");
    c.aud = Some("someone-else".into());
    assert_eq!(code(auth.check(Some(&sign(&c)), Action::Play, None)), "token_invalid");
    // RFC 7519 allows arrays.
    c.aud = Some(OneOrMany::Many(vec!["other".into(), "zenlive".into()]));
    c.iss = Some(OneOrMany::Many(vec!["https://id.example".into()]));
    assert_eq!(code(auth.check(Some(&sign(&c)), Action::Play, None)), "ok");
    c.aud = Some(OneOrMany::Many(vec!["other".into()]));
    assert_eq!(code(auth.check(Some(&sign(&c)), Action::Play, None)), "token_invalid");
}

#[test]
fn a_scoped_token_covers_its_streams_and_nothing_node_wide() {
    let auth = Auth::new(&AuthConfig { jwt_secret: SECRET.to_owned(), ..AuthConfig::default() })
        .expect("valid config");
    let scoped = sign(&claims(&[Role::Admin], Some("live/a")));
    let a = StreamKey::parse("live/a").expect("valid key");
    let b = StreamKey::parse("live/b").expect("valid key");
    assert_eq!(code(auth.check(Some(&scoped), Action::Admin, Some(&a))), "ok");
    assert_eq!(code(auth.check(Some(&scoped), Action::Admin, Some(&b))), "forbidden_stream");
    assert_eq!(code(auth.check(Some(&scoped), Action::Admin, None)), "forbidden_scope");
    let everything = sign(&claims(&[Role::Admin], Some("*")));
    assert_eq!(code(auth.check(Some(&everything), Action::Admin, None)), "ok");
    let unscoped = sign(&claims(&[Role::Admin], None));
    assert_eq!(code(auth.check(Some(&unscoped), Action::Admin, None)), "ok");
    let identity = auth.check_role(Some(&scoped), Action::Admin).expect("an admin").expect("id");
    assert!(identity.covers(&a) && !identity.covers(&b));
}

#[test]
fn off_by_default_and_required_independently() {
    let off = Auth::disabled();
    assert_eq!(code(off.check(None, Action::Publish, None)), "ok");
    assert_eq!(code(off.check(Some("whatever"), Action::Play, None)), "ok");
    assert_eq!(code(off.check(None, Action::Admin, None)), "auth_not_configured");

    let publish_only = Auth::new(&AuthConfig {
        jwt_secret: SECRET.to_owned(),
        require_publish: true,
        ..AuthConfig::default()
    })
    .expect("valid config");
    assert_eq!(code(publish_only.check(None, Action::Play, None)), "ok");
    assert_eq!(code(publish_only.check(None, Action::Publish, None)), "token_missing");
    // A token that is sent is still checked, even where none is required.
    assert_eq!(code(publish_only.check(Some("garbage"), Action::Play, None)), "token_invalid");
}

#[test]
fn bad_configurations_are_refused() {
    let bad = [
        // Unknown algorithms (`none`, `PS256`) cannot be written in an `AuthConfig`: the
        // configuration refuses them (config.rs tests).
        AuthConfig { algorithm: JwtAlgorithm::Rs256, ..AuthConfig::default() },
        AuthConfig { require_play: true, ..AuthConfig::default() },
        AuthConfig {
            algorithm: JwtAlgorithm::Rs256,
            public_key: "/nonexistent.pem".to_owned(),
            ..AuthConfig::default()
        },
    ];
    for config in bad {
        assert!(Auth::new(&config).is_err(), "{config:?}");
    }
}
