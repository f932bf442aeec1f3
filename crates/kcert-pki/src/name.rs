//! Subjects: building the names kcert signs (CN, each O and at most one UID, encoded by kcert),
//! and reading names exactly as the Kubernetes API server does (Go 1.26's crypto/x509: the last
//! CN wins, every O is a group, multi-valued RDNs are flattened, T61String is Latin-1, BMPString
//! refuses surrogates and noncharacters; the x509 authenticator's UID is OID 1.3.6.1.4.1.57683.2).

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
    #[serde(skip_serializing_if = "Option::is_none")]
    uid: Option<String>,
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
            uid: None,
        })
    }

    /// The same subject carrying the user UID the API server reads (OID 1.3.6.1.4.1.57683.2).
    /// Only for a UID a policy rule approved: kcert never copies one from a request.
    pub fn with_uid(mut self, uid: impl Into<String>) -> Result<Self> {
        let uid = uid.into();
        check_value("UID", &uid)?;
        self.uid = Some(uid);
        Ok(self)
    }

    /// The subject to certify for a request, built from the values read (never its bytes): its
    /// one CN and its O values, duplicates dropped. Refused when the request's subject holds
    /// anything else (a UID, OU, emailAddress, unknown OIDs), several or no CNs, or names that
    /// are empty, untrimmed or unprintable. For the offline `kcert sign` and tests; the
    /// controller builds its subject from what the policy approved.
    pub fn from_request(subject: &SubjectInfo) -> Result<Self> {
        if let Some(other) = subject.unexpected_attributes().next() {
            return Err(PkiError::InvalidSubject(format!(
                "the subject holds {}={:?}; kcert certifies only CN (user) and O (groups)",
                other.name, other.value
            )));
        }
        if !subject.uids.is_empty() {
            return Err(PkiError::InvalidSubject(
                "the subject holds a UID (OID 1.3.6.1.4.1.57683.2); kcert does not copy UIDs from requests".into(),
            ));
        }
        let cn = match subject.common_names.as_slice() {
            [one] => one.clone(),
            [] => return Err(PkiError::InvalidSubject("the subject has no CN".into())),
            many => {
                return Err(PkiError::InvalidSubject(format!(
                    "the subject has {} CNs; request exactly one",
                    many.len()
                )));
            }
        };
        let mut groups: Vec<&String> = Vec::new();
        for o in &subject.organizations {
            if !groups.contains(&o) {
                groups.push(o);
            }
        }
        CsrSubject::new(cn, groups.into_iter().cloned())
    }

    /// The UID, when one was approved.
    pub fn uid(&self) -> Option<&str> {
        self.uid.as_deref()
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
    /// order) then the UID if any, every value a UTF8String.
    pub fn to_der(&self) -> Result<Vec<u8>> {
        let mut rdns = RdnSequence::default();
        let attributes = std::iter::once((oid::COMMON_NAME, &self.common_name))
            .chain(self.organizations.iter().map(|o| (oid::ORGANIZATION, o)))
            .chain(self.uid.iter().map(|u| (oid::USER_UID, u)));
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
    if let Some(c) = value.chars().find(|c| is_unprintable(*c)) {
        return Err(PkiError::InvalidSubject(format!(
            "{what} {value:?} contains the unprintable character U+{:04X} (control, format or line/paragraph separator)",
            c as u32
        )));
    }
    if value.trim() != value {
        return Err(PkiError::InvalidSubject(format!(
            "{what} {value:?} starts or ends with whitespace"
        )));
    }
    Ok(())
}

/// Characters a name must never hold: controls (Cc), format characters (Cf: bidirectional
/// overrides, zero-width joiners, BOM, tags, ...) and line/paragraph separators (Zl, Zp). They
/// let a name look like another in a terminal, a log or an approval prompt.
pub fn is_unprintable(c: char) -> bool {
    if c.is_control() {
        return true;
    }
    // Unicode 16's Cf, Zl and Zp code points (the standard library has no category table).
    matches!(c as u32,
        0x00AD | 0x0600..=0x0605 | 0x061C | 0x06DD | 0x070F | 0x0890..=0x0891 | 0x08E2
        | 0x180E | 0x200B..=0x200F | 0x2028..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F
        | 0xFEFF | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
        | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F)
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
    /// Every user UID attribute (OID 1.3.6.1.4.1.57683.2) in order; the API server accepts
    /// exactly one non-empty string and refuses the certificate otherwise.
    pub uids: Vec<String>,
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
            uids: Vec::new(),
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
                } else if atv.oid == oid::USER_UID {
                    info.uids.push(value.clone());
                }
                info.attributes.push(NameAttribute {
                    name: oid::name(&atv.oid),
                    value,
                });
            }
        }
        Ok(info)
    }

    /// Attributes other than CN, O and UID (OU, emailAddress, serialNumber, unknown OIDs):
    /// nothing kcert certifies.
    pub fn unexpected_attributes(&self) -> impl Iterator<Item = &NameAttribute> {
        self.attributes
            .iter()
            .filter(|a| !matches!(a.name.as_str(), "CN" | "O" | "UID"))
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
            c if is_unprintable(c) => out.push_str(&format!("\\u{{{:04X}}}", c as u32)),
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
        // Go 1.26 reads T61String as Latin-1, byte by byte (crypto/x509 and encoding/asn1
        // alike): 0xE9 is "é", and the UTF-8 bytes C3 A9 are "Ã©". Read it the same way.
        Tag::TeletexString => Ok(bytes.iter().map(|b| char::from(*b)).collect()),
        Tag::BmpString => {
            let mut units = bytes;
            if units.len() % 2 != 0 {
                return Err(invalid("BMPString", "odd length"));
            }
            if units.len() >= 2 && units[units.len() - 2..] == [0, 0] {
                units = &units[..units.len() - 2];
            }
            // UCS-2 as Go reads it: surrogates and the permanent noncharacters are refused.
            let mut out = String::with_capacity(units.len() / 2);
            for pair in units.chunks(2) {
                let point = u16::from_be_bytes([pair[0], pair[1]]);
                let refused = point == 0xFFFE
                    || point == 0xFFFF
                    || (0xFDD0..=0xFDEF).contains(&point)
                    || (0xD800..=0xDFFF).contains(&point);
                match char::from_u32(u32::from(point)).filter(|_| !refused) {
                    Some(c) => out.push(c),
                    None => {
                        return Err(invalid(
                            "BMPString",
                            "holds a surrogate or noncharacter code unit",
                        ));
                    }
                }
            }
            Ok(out)
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
    fn t61_is_latin1_and_bmp_refuses_what_go_refuses() {
        // The bytes of UTF-8 "é" in a T61String are two Latin-1 characters, as Go reads them.
        let der = raw_name_der(&[(
            oid::COMMON_NAME,
            Tag::TeletexString,
            "h-jos\u{e9}".as_bytes(),
        )])
        .unwrap();
        assert_eq!(
            SubjectInfo::from_der(&der).unwrap().common_name.as_deref(),
            Some("h-jos\u{c3}\u{a9}")
        );
        let der = raw_name_der(&[(oid::COMMON_NAME, Tag::TeletexString, &[b'j', 0xE9])]).unwrap();
        assert_eq!(
            SubjectInfo::from_der(&der).unwrap().common_name.as_deref(),
            Some("j\u{e9}")
        );
        for units in [
            &[0xD8u8, 0x00, 0xDC, 0x00][..],
            &[0xFF, 0xFE],
            &[0xFD, 0xD0],
        ] {
            let der = raw_name_der(&[(oid::COMMON_NAME, Tag::BmpString, units)]).unwrap();
            assert!(
                matches!(
                    SubjectInfo::from_der(&der),
                    Err(PkiError::InvalidString {
                        kind: "BMPString",
                        ..
                    })
                ),
                "{units:?}"
            );
        }
    }

    #[test]
    fn uids_and_other_attributes_are_seen_and_never_copied() {
        let der = raw_name_der(&[
            (oid::COMMON_NAME, Tag::Utf8String, b"jane"),
            (oid::USER_UID, Tag::Utf8String, b"uid-of-jane"),
            (
                der::oid::ObjectIdentifier::new_unwrap("2.5.4.11"),
                Tag::Utf8String,
                b"ops",
            ),
        ])
        .unwrap();
        let info = SubjectInfo::from_der(&der).unwrap();
        assert_eq!(info.uids, ["uid-of-jane"]);
        let other: Vec<_> = info
            .unexpected_attributes()
            .map(|a| a.name.clone())
            .collect();
        assert_eq!(other, ["OU"]);
        let err = CsrSubject::from_request(&info).unwrap_err().to_string();
        assert!(err.contains("OU=\"ops\""), "{err}");

        let der = raw_name_der(&[
            (oid::COMMON_NAME, Tag::Utf8String, b"jane"),
            (oid::USER_UID, Tag::Utf8String, b"uid-of-jane"),
        ])
        .unwrap();
        let err = CsrSubject::from_request(&SubjectInfo::from_der(&der).unwrap()).unwrap_err();
        assert!(err.to_string().contains("UID"), "{err}");

        // Built with an approved UID: exactly CN, each O, the UID.
        let s = CsrSubject::new("jane", ["dev"])
            .unwrap()
            .with_uid("u-1")
            .unwrap();
        let info = SubjectInfo::from_der(&s.to_der().unwrap()).unwrap();
        assert_eq!(info.to_string(), "CN=jane, O=dev, UID=u-1");
        assert_eq!(info.uids, ["u-1"]);

        // Duplicates collapse; the subject is re-encoded, not copied.
        let der = raw_name_der(&[
            (
                oid::ORGANIZATION,
                Tag::BmpString,
                &[0, b'd', 0, b'e', 0, b'v'],
            ),
            (oid::COMMON_NAME, Tag::PrintableString, b"jane"),
            (oid::ORGANIZATION, Tag::Utf8String, b"dev"),
        ])
        .unwrap();
        let built = CsrSubject::from_request(&SubjectInfo::from_der(&der).unwrap()).unwrap();
        assert_eq!(built.organizations(), ["dev"]);
        assert_ne!(built.to_der().unwrap(), der);
    }

    #[test]
    fn format_and_separator_characters_are_unprintable() {
        for bad in [
            "ja\u{202e}ne",
            "ja\u{200b}ne",
            "ja\u{2028}ne",
            "\u{feff}jane",
            "ja\u{e0041}",
        ] {
            let err = CsrSubject::new(bad, Vec::<String>::new())
                .unwrap_err()
                .to_string();
            assert!(err.contains("unprintable"), "{bad:?}: {err}");
        }
        assert!(CsrSubject::new("jos\u{e9}", ["d\u{e9}v"]).is_ok());
    }

    #[test]
    fn display_escapes_special_characters() {
        let s = CsrSubject::new("a,b+c", ["#x"]).unwrap();
        let info = SubjectInfo::from_der(&s.to_der().unwrap()).unwrap();
        assert_eq!(info.to_string(), "CN=a\\,b\\+c, O=\\#x");
    }
}
