use super::{in_file, report};
use crate::cli::{CsrArgs, OutputFormat};
use crate::files::{Mode, Staged, read};
use anyhow::Result;
use kcert_pki::{CertificateRequest, CsrSubject, PrivateKey, SubjectAltNames, build_csr};

pub fn run(args: &CsrArgs, out: OutputFormat) -> Result<()> {
    let key = PrivateKey::from_pem(&read(&args.key)?).map_err(in_file(&args.key))?;
    let subject = CsrSubject::new(args.user.as_str(), args.groups.iter().map(String::as_str))?;
    let sans = SubjectAltNames {
        dns: args.dns.clone(),
        ips: args.ips.clone(),
        ..Default::default()
    };
    let pem = build_csr(&key, &subject, &sans)?;
    // Read back what we wrote, as a signer will, before handing it out.
    let parsed = CertificateRequest::from_pem(pem.as_bytes())?;
    let path = Staged::new(&args.out, pem.as_bytes(), Mode::Public, args.force)?.commit()?;
    report(
        out,
        serde_json::json!({
            "csr": path,
            "user": parsed.subject().common_name,
            "groups": parsed.subject().organizations,
            "sans": parsed.sans(),
            "keyAlgorithm": key.algorithm().to_string(),
            "request": pem,
        }),
        || format!("wrote {} ({})", path.display(), parsed.subject()),
    );
    Ok(())
}
