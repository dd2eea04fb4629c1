//! Transport security against a real server, with certificates generated at
//! test time (rcgen): TLS with an API key, mutual TLS where the client
//! certificate carries the role, and plaintext refused off loopback.

mod common;

use candor::{
    Gateway,
    config::{ClientCert, Role, TlsConfig},
    grpc::pb::{self, model_service_client::ModelServiceClient},
};
use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use tonic::{
    Code, Request,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};

struct Pki {
    ca: CertifiedIssuer<'static, KeyPair>,
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "candor test CA");
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self {
            ca,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// A leaf certificate and key (PEM) signed by this CA, and the
    /// certificate's SHA-256 fingerprint.
    fn leaf(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String, String) {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        (cert.pem(), key.serialize_pem(), sha256_hex(cert.der()))
    }

    fn write(&self, file: &str, pem: &str) -> std::path::PathBuf {
        let path = self.dir.path().join(file);
        std::fs::write(&path, pem).unwrap();
        path
    }

    /// Server TLS settings for "localhost", verifying clients when `mtls`.
    fn server(&self, mtls: bool) -> TlsConfig {
        let (cert, key, _) = self.leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth);
        TlsConfig {
            cert: self.write("server.pem", &cert),
            key: self.write("server.key", &key),
            client_ca: mtls.then(|| self.write("ca.pem", &self.ca.pem())),
            client_auth_optional: false,
        }
    }

    fn client(&self, identity: Option<(&str, &str)>) -> ClientTlsConfig {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.pem()))
            .domain_name("localhost");
        match identity {
            Some((cert, key)) => tls.identity(Identity::from_pem(cert, key)),
            None => tls,
        }
    }
}

async fn connect(server: &TestServer, tls: Option<ClientTlsConfig>) -> Result<Channel, String> {
    let endpoint = match tls {
        Some(tls) => Channel::from_shared(format!("https://localhost:{}", server.addr.port()))
            .unwrap()
            .tls_config(tls)
            .unwrap(),
        None => Channel::from_shared(server.url()).unwrap(),
    };
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// ListModels over a fresh connection with `tls` and `credential`: the
/// status code, or UNAVAILABLE when the connection itself fails.
async fn list_over(
    server: &TestServer,
    tls: Option<ClientTlsConfig>,
    credential: Option<&str>,
) -> Result<(), Code> {
    match connect(server, tls).await {
        Ok(channel) => ModelServiceClient::new(channel)
            .list_models(list(credential))
            .await
            .map(drop)
            .map_err(|s| s.code()),
        Err(_) => Err(Code::Unavailable),
    }
}

fn list(credential: Option<&str>) -> Request<pb::ListModelsRequest> {
    let mut r = Request::new(pb::ListModelsRequest {});
    if let Some(c) = credential {
        r.metadata_mut()
            .insert("authorization", format!("Bearer {c}").parse().unwrap());
    }
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_only_tls_clients() {
    let pki = Pki::new();
    let mut config = test_config();
    config.tls = Some(pki.server(false));
    config.access.api_keys = vec![api_key(Role::Engineer, "eng-key")];
    let server = TestServer::start_with(config).await;

    let channel = connect(&server, Some(pki.client(None))).await.unwrap();
    let models = ModelServiceClient::new(channel)
        .list_models(list(Some("eng-key")))
        .await
        .unwrap()
        .into_inner();
    assert!(!models.models.is_empty());

    // A plaintext client gets no answer from a TLS port.
    let plain = list_over(&server, None, Some("eng-key")).await;
    assert!(plain.is_err(), "{plain:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_authenticates_services_by_certificate() {
    let pki = Pki::new();
    let (scorer_cert, scorer_key, scorer_sha) =
        pki.leaf("dsp-1", ExtendedKeyUsagePurpose::ClientAuth);
    let (stranger_cert, stranger_key, _) = pki.leaf("dsp-2", ExtendedKeyUsagePurpose::ClientAuth);
    let mut config = test_config();
    config.tls = Some(pki.server(true));
    config.access.clients = vec![ClientCert {
        name: "dsp-1".into(),
        role: Role::Scorer,
        cert_sha256: scorer_sha,
    }];
    let server = TestServer::start_with(config).await;

    // The mapped certificate is a scorer: it scores without any API key...
    let channel = connect(&server, Some(pki.client(Some((&scorer_cert, &scorer_key)))))
        .await
        .unwrap();
    let decision = pb::scoring_service_client::ScoringServiceClient::new(channel.clone())
        .score(caravan_request())
        .await
        .unwrap()
        .into_inner()
        .decision
        .unwrap();
    assert!(decision.score.is_some());
    // ...and reads nobody's data.
    let denied = pb::explanation_service_client::ExplanationServiceClient::new(channel)
        .get_explanation(pb::GetExplanationRequest {
            decision_id: decision.decision_id,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // A certificate from the same CA that maps to no role is not enough.
    let channel = connect(
        &server,
        Some(pki.client(Some((&stranger_cert, &stranger_key)))),
    )
    .await
    .unwrap();
    let unknown = ModelServiceClient::new(channel)
        .list_models(list(None))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);

    // Without a client certificate the handshake itself fails.
    let anonymous = list_over(&server, Some(pki.client(None)), None).await;
    assert!(anonymous.is_err(), "{anonymous:?}");

    // A certificate from another CA is refused too.
    let other = Pki::new();
    let (cert, key, _) = other.leaf("dsp-1", ExtendedKeyUsagePurpose::ClientAuth);
    let foreign = list_over(&server, Some(pki.client(Some((&cert, &key)))), None).await;
    assert!(foreign.is_err(), "{foreign:?}");
}

/// The client commands speak TLS to an https:// address, verifying the
/// gateway against `--ca-cert` (else the public roots, which do not know
/// this test CA), and present `--client-cert` to a gateway that verifies
/// its clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_commands_speak_tls() {
    let pki = Pki::new();
    let (cert, key, sha) = pki.leaf("dsp-1", ExtendedKeyUsagePurpose::ClientAuth);
    let mut config = test_config();
    config.tls = Some(pki.server(true));
    config.access.clients = vec![ClientCert {
        name: "dsp-1".into(),
        role: Role::Scorer,
        cert_sha256: sha,
    }];
    let server = TestServer::start_with(config).await;
    let ca = pki.write("ca.pem", &pki.ca.pem());
    let identity = [
        "--client-cert".to_owned(),
        pki.write("client.pem", &cert).display().to_string(),
        "--client-key".into(),
        pki.write("client.key", &key).display().to_string(),
    ];
    let golden =
        std::fs::read_to_string(repo_root().join("models/caravan-lgbm/1.0.0/golden.csv")).unwrap();
    let row: String = golden
        .lines()
        .take(2)
        .map(|l| l.rsplit_once(',').unwrap().0.to_owned() + "\n")
        .collect();
    let csv = pki.write("row.csv", &row);
    let addr = format!("https://localhost:{}", server.addr.port());
    let score = |ca: Option<&std::path::Path>, identity: &[String]| {
        let mut args = vec![
            "score".to_owned(),
            "--addr".into(),
            addr.clone(),
            "--model".into(),
            "caravan-lgbm".into(),
            "--csv".into(),
            csv.display().to_string(),
        ];
        if let Some(ca) = ca {
            args.extend(["--ca-cert".into(), ca.display().to_string()]);
        }
        args.extend_from_slice(identity);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        candor(&args)
    };
    let verified = score(Some(&ca), &identity);
    assert!(
        verified.status.success(),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );
    assert!(String::from_utf8_lossy(&verified.stdout).contains("decision_id"));
    let unknown_ca = score(None, &identity);
    assert!(!unknown_ca.status.success());
    let no_certificate = score(Some(&ca), &[]);
    assert!(!no_certificate.status.success());
    // The key alone is a mistake the command names.
    let half = score(Some(&ca), &identity[2..]);
    assert!(
        String::from_utf8_lossy(&half.stderr).contains("--client-cert"),
        "{}",
        String::from_utf8_lossy(&half.stderr)
    );
}

#[tokio::test]
async fn plaintext_and_open_access_are_refused_off_loopback_unless_allowed() {
    let mut config = test_config();
    config.listen = "0.0.0.0:0".parse().unwrap();
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let gateway = std::sync::Arc::new(Gateway::new(config.clone()).unwrap());
    let err = candor::serve(listener, gateway, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, candor::ServeError::Plaintext(_)), "{err}");
    assert!(err.to_string().contains("allow_plaintext"), "{err}");

    // Plaintext explicitly allowed (behind a TLS-terminating proxy), an
    // open gateway (no credential configured) is still refused there.
    config.allow_plaintext = true;
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let gateway = std::sync::Arc::new(Gateway::new(config.clone()).unwrap());
    let err = candor::serve(listener, gateway, std::future::pending())
        .await
        .unwrap_err();
    assert!(matches!(err, candor::ServeError::OpenAccess(_)), "{err}");
    assert!(err.to_string().contains("access.api_keys"), "{err}");

    // Open access explicitly allowed too, it serves.
    config.allow_open_access = true;
    let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
    let gateway = std::sync::Arc::new(Gateway::new(config).unwrap());
    let serving = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        candor::serve(listener, gateway, std::future::pending()),
    )
    .await;
    assert!(serving.is_err(), "still serving: {serving:?}");
}

/// A TLS file that cannot serve is refused before the server starts, with
/// the setting, the file and what is wrong (tonic alone says only
/// "transport error").
#[tokio::test]
async fn tls_files_that_cannot_serve_are_named() {
    let pki = Pki::new();
    let good = pki.server(true);
    let (_, other_key, _) = pki.leaf("other", ExtendedKeyUsagePurpose::ServerAuth);
    let other_key = pki.write("other.key", &other_key);
    let garbage = pki.write("garbage.pem", "not a certificate\n");
    let cases = [
        (
            TlsConfig {
                key: other_key,
                ..good.clone()
            },
            "tls.key",
            "does not go with tls.cert",
        ),
        (
            TlsConfig {
                cert: good.key.clone(),
                key: good.cert.clone(),
                ..good.clone()
            },
            "tls.cert",
            "holds no PEM certificate",
        ),
        (
            TlsConfig {
                key: garbage.clone(),
                ..good.clone()
            },
            "tls.key",
            "is not a PEM private key",
        ),
        (
            TlsConfig {
                client_ca: Some(garbage.clone()),
                ..good.clone()
            },
            "tls.client_ca",
            "holds no PEM certificate",
        ),
    ];
    for (tls, field, says) in cases {
        let mut config = test_config();
        config.tls = Some(tls);
        let listener = tokio::net::TcpListener::bind(config.listen).await.unwrap();
        let gateway = std::sync::Arc::new(Gateway::new(config).unwrap());
        let err = candor::serve(listener, gateway, std::future::pending())
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(field) && err.contains(says),
            "{field}: {err}"
        );
    }
}
