//! The one way tiersync configures the AWS SDK, shared by the CLI, both Lambdas, the tests and the
//! benches: aws-config's usual chain (`AWS_ENDPOINT_URL`, `AWS_PROFILE`, SSO, environment
//! credentials, the Lambda and container credential sources) with one explicit HTTPS client.
//!
//! Why an explicit client: the SDK's default features link two TLS stacks, and the default one
//! statically links aws-lc, about 2 MiB of the Lambda binaries. rustls on ring is the same
//! hyper 1 client with the same native trust store, at a fraction of the size.

use aws_config::{BehaviorVersion, ConfigLoader, SdkConfig};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// hyper 1 + rustls (ring), trusting the platform's certificates; plain HTTP works too, for local
/// endpoints.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// aws-config's loader at the latest behaviour version with [`https_client`]: add overrides, then
/// `load()`.
pub fn loader() -> ConfigLoader {
    aws_config::defaults(BehaviorVersion::latest()).http_client(https_client())
}

/// The SDK configuration from the environment and profile, as `aws_config::load_from_env` would
/// give it.
pub async fn load() -> SdkConfig {
    loader().load().await
}
