//! Subjects: building CN + O names, and reading them exactly as the Kubernetes API server does
//! (Go's crypto/x509: the last CN wins, every O is a group, multi-valued RDNs are flattened).

use crate::error::corrupt;
use crate::{PkiError, Result, oid};
use der::asn1::{AnyRef, SetOfVec, Utf8StringRef};
use der::oid::ObjectIdentifier;
use der::{Decode, Encode, Tag, Tagged};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

/// The identity a Kubernetes client certificate carries: CN is the user, each O a group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CsrSubject {
    common_name: String,
    organizations: Vec<String>,
}

impl CsrSubject {
    /// A subject for `user` in `groups`. The user must be non-empty; neither may contain control
    /// characters or start or end with whitespace, since the API server would take them verbatim.
    pub fn new(
        user: impl Into<String>,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self> {
        let common_name = user.into();
        check_value("user (CN)", &common_name)?;
        let mut organizations: Vec<String> = Vec::new();
        for group in groups {
            let group = group.into();
            check_value("group (O)", &group)?;
            if organizations.contains(&group) {
                return Err(PkiError::InvalidSubject(format!(
                    "group '{group}' is given twice"
                )));
            }
            organizations.push(group);
        }
        Ok(CsrSubject {
            common_name,
            organizations,
        })
    }

    /// The user name (CN).
    pub fn common_name(&self) -> &str {
        &self.common_name
    }

    /// The groups (every O, in order).
    pub fn organizations(&self) -> &[String] {
        &self.organizations
    }

    /// DER Name: one RDN per attribute, CN first then each O (openssl's `-subj "/CN=jane/O=dev"`
    /// order), every value a UTF8String.
    pub fn to_der(&self) -> Result<Vec<u8>> {
        let mut rdns = RdnSequence::default();
        let attributes = std::iter::once((oid::COMMON_NAME, &self.common_name))
            .chain(self.organizations.iter().map(|o| (oid::ORGANIZATION, o)));
        for (attr_oid, value) in attributes {
            let utf8 = Utf8StringRef::new(value).map_err(crate::error::encode("subject"))?;
            let value = der::Any::encode_from(&utf8).map_err(crate::error::encode("subject"))?;
            let mut rdn = RelativeDistinguishedName::default();
            rdn.insert(AttributeTypeAndValue {
                oid: attr_oid,
                value,
            })
            .map_err(crate::error::encode("subject"))?;
            rdns.push(rdn);
        }
        rdns.to_der().map_err(crate::error::encode("subject"))
    }
}

fn check_value(what: &str, value: &str) -> Result<()> {
    if value.is_empty() {
        return Err(PkiError::InvalidSubject(format!("{what} is empty")));
    }
    if value.chars().any(char::is_control) {
        return Err(PkiError::InvalidSubject(format!(
            "{what} {value:?} contains control characters"
        )));
    }
    if value.trim() != value {
        return Err(PkiError::InvalidSubject(format!(
            "{what} {value:?} starts or ends with whitespace"
        )));
    }
    Ok(())
}

/// One attribute of a name, decoded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct NameAttribute {
    /// Short name (`CN`, `O`, …) or dotted OID.
    pub name: String,
    /// The value as a string.
    pub value: String,
}

/// A name as the Kubernetes API server reads it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubjectInfo {
    /// The user: the last CN, as Go's `pkix.Name` keeps it. `None` when there is no CN.
    pub common_name: Option<String>,
    /// Every CN in order; more than one is suspicious (only the last counts).
    pub common_names: Vec<String>,
    /// The groups: every O in order, duplicates kept.
    pub organizations: Vec<String>,
    /// Every attribute in DER order.
    pub attributes: Vec<NameAttribute>,
    /// Whether some RDN holds several attributes (`CN=a+O=b`).
    pub multi_valued_rdn: bool,
}

impl SubjectInfo {
    /// Read a DER Name.
    pub fn from_der(der: &[u8]) -> Result<Self> {
        let rdns = RdnSequence::from_der(der).map_err(corrupt("subject name"))?;
        let mut info = SubjectInfo {
            common_name: None,
            common_names: Vec::new(),
            organizations: Vec::new(),
            attributes: Vec::new(),
            multi_valued_rdn: false,
        };
        for rdn in rdns.iter() {
            info.multi_valued_rdn |= rdn.len() > 1;
            for atv in rdn.iter() {
                let value = decode_string(&atv.oid, &atv.value.to_ref())?;
                if atv.oid == oid::COMMON_NAME {
                    info.common_name = Some(value.clone());
                    info.common_names.push(value.clone());
                } else if atv.oid == oid::ORGANIZATION {
                    info.organizations.push(value.clone());
                }
                info.attributes.push(NameAttribute {
                    name: oid::name(&atv.oid),
                    value,
                });
            }
        }
        Ok(info)
    }
}

impl std::fmt::Display for SubjectInfo {
    /// `CN=jane, O=dev, O=ops` in DER order, values escaped as RFC 4514 does.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .attributes
            .iter()
            .map(|a| format!("{}={}", a.name, escape(&a.value)))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\{:02X}", c as u32)),
            c => out.push(c),
        }
    }
    if out.ends_with(' ') {
        out.pop();
        out.push_str("\\ ");
    }
    out
}

/// Decode an attribute value the way Go's crypto/x509 `parseASN1String` does, so kcert sees the
/// same user and groups the API server will. Types Go refuses are refused here too.
fn decode_string(attr: &ObjectIdentifier, value: &AnyRef<'_>) -> Result<String> {
    let bytes = value.value();
    let invalid = |kind: &'static str, detail: &str| PkiError::InvalidString {
        oid: oid::name(attr),
        kind,
        detail: detail.to_string(),
    };
    match value.tag() {
        Tag::Utf8String => {
            String::from_utf8(bytes.to_vec()).map_err(|_| invalid("UTF8String", "not UTF-8"))
        }
        Tag::PrintableString => {
            // Go also accepts '*' and '&' here for compatibility with broken encoders.
            let ok = bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?*&".contains(b));
            if !ok {
                return Err(invalid(
                    "PrintableString",
                    "contains characters outside its alphabet",
                ));
            }
            Ok(String::from_utf8(bytes.to_vec()).expect("ASCII"))
        }
        Tag::Ia5String => {
            if !bytes.is_ascii() {
                return Err(invalid("IA5String", "contains non-ASCII bytes"));
            }
            Ok(String::from_utf8(bytes.to_vec()).expect("ASCII"))
        }
        Tag::NumericString => {
            if !bytes.iter().all(|b| b.is_ascii_digit() || *b == b' ') {
                return Err(invalid(
                    "NumericString",
                    "contains characters other than digits and space",
                ));
            }
            Ok(String::from_utf8(bytes.to_vec()).expect("ASCII"))
        }
        // Go hands T61String bytes through unchanged; only valid UTF-8 is representable here,
        // and anything else is refused rather than guessed at.
        Tag::TeletexString => String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid("T61String", "holds bytes that are not UTF-8")),
        Tag::BmpString => {
            let mut units = bytes;
            if units.len() % 2 != 0 {
                return Err(invalid("BMPString", "odd length"));
            }
            if units.len() >= 2 && units[units.len() - 2..] == [0, 0] {
                units = &units[..units.len() - 2];
            }
            let code_units = units.chunks(2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            Ok(char::decode_utf16(code_units)
                .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                .collect())
        }
        other => Err(PkiError::UnsupportedStringType {
            oid: oid::name(attr),
            tag: other.to_string(),
        }),
    }
}

/// Build a Name from raw (type, tag, bytes) attributes, one RDN each: for tests and hostile corpora.
#[doc(hidden)]
pub fn raw_name_der(attributes: &[(ObjectIdentifier, Tag, &[u8])]) -> Result<Vec<u8>> {
    let mut rdns = RdnSequence::default();
    for (attr_oid, tag, bytes) in attributes {
        let value = der::Any::new(*tag, bytes.to_vec()).map_err(crate::error::encode("name"))?;
        let mut set = SetOfVec::new();
        set.insert(AttributeTypeAndValue {
            oid: *attr_oid,
            value,
        })
        .map_err(crate::error::encode("name"))?;
        let mut rdn = RelativeDistinguishedName::default();
        for atv in set.iter() {
            rdn.insert(atv.clone())
                .map_err(crate::error::encode("name"))?;
        }
        rdns.push(rdn);
    }
    rdns.to_der().map_err(crate::error::encode("name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_group_survives_and_last_cn_wins() {
        let s = CsrSubject::new("jane", ["dev", "ops", "qa"]).unwrap();
        let info = SubjectInfo::from_der(&s.to_der().unwrap()).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("jane"));
        assert_eq!(info.organizations, ["dev", "ops", "qa"]);
        assert_eq!(info.to_string(), "CN=jane, O=dev, O=ops, O=qa");

        let two_cns = raw_name_der(&[
            (oid::COMMON_NAME, Tag::Utf8String, b"alice"),
            (oid::COMMON_NAME, Tag::PrintableString, b"bob"),
        ])
        .unwrap();
        let info = SubjectInfo::from_der(&two_cns).unwrap();
        assert_eq!(info.common_name.as_deref(), Some("bob"));
        assert_eq!(info.common_names, ["alice", "bob"]);
    }

    #[test]
    fn string_types_decode_as_go_does() {
        let bmp: Vec<u8> = "dév".encode_utf16().flat_map(|u| u.to_be_bytes()).collect();
        let der = raw_name_der(&[
            (oid::ORGANIZATION, Tag::BmpString, &bmp),
            (oid::ORGANIZATION, Tag::TeletexString, b"ops"),
            (oid::ORGANIZATION, Tag::Ia5String, b"qa"),
        ])
        .unwrap();
        assert_eq!(
            SubjectInfo::from_der(&der).unwrap().organizations,
            ["dév", "ops", "qa"]
        );

        let bad_printable =
            raw_name_der(&[(oid::ORGANIZATION, Tag::PrintableString, b"a_b")]).unwrap();
        assert!(matches!(
            SubjectInfo::from_der(&bad_printable),
            Err(PkiError::InvalidString {
                kind: "PrintableString",
                ..
            })
        ));
        let octets = raw_name_der(&[(oid::ORGANIZATION, Tag::OctetString, b"x")]).unwrap();
        assert!(matches!(
            SubjectInfo::from_der(&octets),
            Err(PkiError::UnsupportedStringType { .. })
        ));
    }

    #[test]
    fn bad_subjects_are_refused_with_reasons() {
        for (user, groups, needle) in [
            ("", vec!["dev"], "empty"),
            ("jane\0", vec![], "control"),
            (" jane", vec![], "whitespace"),
            ("jane", vec!["dev", "dev"], "twice"),
            ("jane", vec!["system:masters "], "whitespace"),
        ] {
            let err = CsrSubject::new(user, groups).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    #[test]
    fn display_escapes_special_characters() {
        let s = CsrSubject::new("a,b+c", ["#x"]).unwrap();
        let info = SubjectInfo::from_der(&s.to_der().unwrap()).unwrap();
        assert_eq!(info.to_string(), "CN=a\\,b\\+c, O=\\#x");
    }
}
