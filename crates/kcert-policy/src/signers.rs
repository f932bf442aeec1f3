//! The signers' own tables: what a signer kcert serves will put in a certificate, whatever a
//! policy says. Every signer kcert serves issues client certificates, with the rules of
//! `kubernetes.io/kube-apiserver-client` (messages worded as Kubernetes words them).

use kcert_pki::Usage;

/// Usages a client-certificate signer accepts: Kubernetes' client usages.
pub const CLIENT_ALLOWED_USAGES: [&str; 3] = crate::DEFAULT_USAGES;

/// Check `usages` against the client-certificate table of `signer_name`'s signer.
pub fn check_usages(_signer_name: &str, usages: &[String]) -> Result<(), String> {
    for u in usages {
        if !CLIENT_ALLOWED_USAGES.contains(&u.as_str()) {
            return Err(format!("invalid usage for client certificate: {u}"));
        }
    }
    if !usages.iter().any(|u| u == Usage::ClientAuth.as_str()) {
        return Err("missing required usage for client certificate: client auth".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_signer_usage_rules_match_kubernetes() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let check = |v: &[&str]| check_usages("kcert.dev/client", &s(v));
        assert!(check(&["digital signature", "key encipherment", "client auth"]).is_ok());
        assert!(check(&["client auth"]).is_ok());
        assert_eq!(
            check(&["client auth", "server auth"]).unwrap_err(),
            "invalid usage for client certificate: server auth"
        );
        assert_eq!(
            check(&["digital signature"]).unwrap_err(),
            "missing required usage for client certificate: client auth"
        );
        assert_eq!(
            check(&["bogus"]).unwrap_err(),
            "invalid usage for client certificate: bogus"
        );
    }
}
