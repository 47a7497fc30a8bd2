//! The HTTPS client tiersync builds (`tiersync::aws::https_client`: hyper 1 + rustls on ring,
//! platform trust store) makes a real TLS connection and a real DynamoDB call through it.
//!
//! Its own test binary: it points `SSL_CERT_FILE` at a throwaway CA, and the environment is
//! process-wide.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// A TLS server for `localhost` that answers every request with one GetItem response and
/// counts the requests whose headers name GetItem.
async fn tls_dynamodb(cert_file: &std::path::Path) -> (String, Arc<AtomicUsize>) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    let cert = params.self_signed(&key).unwrap();
    std::fs::write(cert_file, cert.pem()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head and the body (Content-Length), then answer.
                loop {
                    let n = tls.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_lowercase();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map(|v| v.trim().parse().unwrap())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            if text.contains("x-amz-target: dynamodb_20120810.getitem") {
                                counter.fetch_add(1, Ordering::SeqCst);
                            }
                            break;
                        }
                    }
                }
                let body = r#"{"Item":{"PK":{"S":"USER#tls"},"SK":{"S":"PROFILE"},"tier":{"S":"premium"}}}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                tls.write_all(resp.as_bytes()).await.unwrap();
                tls.shutdown().await.ok();
            });
        }
    });
    (format!("https://localhost:{port}"), seen)
}

#[tokio::test]
async fn the_sdk_client_speaks_tls_through_rustls_on_ring() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let (endpoint, seen) = tls_dynamodb(&ca).await;
    // rustls-native-certs reads SSL_CERT_FILE instead of the system store. Set before any client
    // is built; this binary has no other test.
    std::env::set_var("SSL_CERT_FILE", &ca);
    let conf = tiersync::aws::loader()
        .endpoint_url(&endpoint)
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "t", "t", None, None, "t",
        ))
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&conf);
    let out = client
        .get_item()
        .table_name("t")
        .key(
            "PK",
            aws_sdk_dynamodb::types::AttributeValue::S("USER#tls".into()),
        )
        .key(
            "SK",
            aws_sdk_dynamodb::types::AttributeValue::S("PROFILE".into()),
        )
        .send()
        .await
        .expect("GetItem over TLS");
    let item = out.item().expect("an item");
    assert_eq!(
        item.get("tier")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("premium")
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "exactly one GetItem reached the TLS server"
    );
}
