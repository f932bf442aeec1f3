//! Kubeconfig files for the test bed's identities (YAML that kubectl and kube-rs both read).

use base64::Engine as _;

/// How a kubeconfig user authenticates.
pub enum Credentials<'a> {
    /// A client certificate and its key, PEM.
    ClientCertificate {
        /// Certificate PEM.
        cert_pem: &'a str,
        /// Key PEM.
        key_pem: &'a str,
    },
    /// A bearer token.
    Token(&'a str),
}

/// Render a one-context kubeconfig with everything embedded (no file references).
pub fn render(server: &str, ca_pem: &str, user: &str, credentials: &Credentials<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user_entry = match credentials {
        Credentials::ClientCertificate { cert_pem, key_pem } => serde_json::json!({
            "client-certificate-data": b64(cert_pem),
            "client-key-data": b64(key_pem),
        }),
        Credentials::Token(token) => serde_json::json!({ "token": token }),
    };
    let doc = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kcert-testbed", "cluster": {
            "server": server,
            "certificate-authority-data": b64(ca_pem),
        }}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": user, "context": {"cluster": "kcert-testbed", "user": user}}],
        "current-context": user,
    });
    serde_yaml::to_string(&doc).expect("a JSON value always renders as YAML")
}
