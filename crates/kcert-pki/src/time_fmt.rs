//! Times as people and JSON read them.

use std::time::SystemTime;

/// RFC 3339 in UTC, whole seconds.
pub fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .expect("zero nanoseconds is valid")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("RFC 3339 formatting of a valid time")
}

/// An X.509 Time for `t`: UTCTime before 2050 and GeneralizedTime from then on (RFC 5280).
pub(crate) fn x509_time(t: SystemTime) -> crate::Result<x509_cert::time::Time> {
    use der::asn1::{GeneralizedTime, UtcTime};
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| crate::PkiError::InvalidLifetime("time before 1970".into()))?;
    let whole = std::time::Duration::from_secs(since.as_secs());
    let bad = |e| {
        crate::PkiError::InvalidLifetime(format!("time not representable in a certificate: {e}"))
    };
    // 2050-01-01T00:00:00Z
    if whole.as_secs() < 2_524_608_000 {
        Ok(x509_cert::time::Time::UtcTime(
            UtcTime::from_unix_duration(whole).map_err(bad)?,
        ))
    } else {
        Ok(x509_cert::time::Time::GeneralTime(
            GeneralizedTime::from_unix_duration(whole).map_err(bad)?,
        ))
    }
}
