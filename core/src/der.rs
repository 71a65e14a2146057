//! The framing of a PKCS#10 request checked as strictly as Go's `encoding/asn1` reads it
//! (kube-apiserver parses every CSR with Go's `x509.ParseCertificateRequest`).
//!
//! x509-parser decodes by tag number and does not look at the tag class: a request whose
//! `SEQUENCE`s carry an application or context-specific class, or whose signature
//! algorithm is framed that way outside the signed part, parses and verifies there. Go
//! refuses it. `check_request` walks the skeleton of RFC 2986 once before x509-parser
//! reads anything, so the core is never laxer than the parser the cluster uses: definite,
//! minimal lengths, low tag numbers, the exact tag (class, constructed bit and number) of
//! every element of the structure, DER booleans and minimal integers, and no trailing
//! bytes at any level. Values the structure leaves open (`ANY`) must be of the universal
//! class (what they contain may use any class: RSASSA-PSS parameters are context-tagged),
//! which is stricter than Go and refuses nothing a real kubelet sends.
//!
//! The contents of extensions (inside their `OCTET STRING`) are left to x509-parser, which
//! reads the subjectAltName's `GeneralName`s by number as Go does by `tag ^ 0x80`.

use std::fmt;

/// `SEQUENCE` (universal, constructed).
const SEQUENCE: u8 = 0x30;
/// `SET` (universal, constructed).
const SET: u8 = 0x31;
/// `INTEGER`.
const INTEGER: u8 = 0x02;
/// `BIT STRING`.
const BIT_STRING: u8 = 0x03;
/// `OCTET STRING`.
const OCTET_STRING: u8 = 0x04;
/// `OBJECT IDENTIFIER`.
const OID: u8 = 0x06;
/// `BOOLEAN`.
const BOOLEAN: u8 = 0x01;
/// `[0] IMPLICIT` constructed: the request's attributes.
const ATTRIBUTES: u8 = 0xa0;
/// Tag class bits of an identifier octet.
const CLASS_MASK: u8 = 0xc0;
/// The constructed bit of an identifier octet.
const CONSTRUCTED: u8 = 0x20;
/// Low tag numbers stop below this; `0x1f` announces the high-tag-number form.
const HIGH_TAG_NUMBER: u8 = 0x1f;
/// PKCS#9 extensionRequest, 1.2.840.113549.1.9.14, as DER content octets.
const EXTENSION_REQUEST_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x0e];
/// How deep an open (`ANY`) value may nest: real attribute values are flat.
const MAX_OPEN_DEPTH: usize = 8;

/// Why a request's DER framing is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FramingError {
    /// Where in the structure (`request.info.subject`, …).
    pub at: &'static str,
    /// What is wrong there.
    pub problem: String,
}

impl fmt::Display for FramingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.at, self.problem)
    }
}

impl std::error::Error for FramingError {}

type Result<T> = std::result::Result<T, FramingError>;

fn fail<T>(at: &'static str, problem: impl Into<String>) -> Result<T> {
    Err(FramingError {
        at,
        problem: problem.into(),
    })
}

/// One element: its identifier octet and its contents.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    content: &'a [u8],
}

/// Reads one element from the front of `input`; returns it and what follows.
fn read<'a>(input: &'a [u8], at: &'static str) -> Result<(Tlv<'a>, &'a [u8])> {
    let [tag, first, rest @ ..] = input else {
        return fail(at, "truncated element");
    };
    if tag & HIGH_TAG_NUMBER == HIGH_TAG_NUMBER {
        return fail(at, "high-tag-number form");
    }
    let (len, rest) = match *first {
        n if n < 0x80 => (usize::from(n), rest),
        0x80 => return fail(at, "indefinite length (BER, not DER)"),
        n => {
            let count = usize::from(n & 0x7f);
            if count > 4 || rest.len() < count {
                return fail(at, "length too large or truncated");
            }
            let (bytes, rest) = rest.split_at(count);
            if bytes[0] == 0 {
                return fail(at, "length not minimally encoded");
            }
            let len = bytes
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            if len < 0x80 {
                return fail(at, "length not minimally encoded");
            }
            (len, rest)
        }
    };
    if rest.len() < len {
        return fail(at, "truncated element");
    }
    let (content, rest) = rest.split_at(len);
    Ok((Tlv { tag: *tag, content }, rest))
}

/// Reads one element that must carry exactly `tag`.
fn expect<'a>(input: &'a [u8], tag: u8, at: &'static str) -> Result<(&'a [u8], &'a [u8])> {
    let (tlv, rest) = read(input, at)?;
    if tlv.tag != tag {
        return fail(
            at,
            format!("tag 0x{:02x} where 0x{tag:02x} belongs", tlv.tag),
        );
    }
    Ok((tlv.content, rest))
}

fn done(rest: &[u8], at: &'static str) -> Result<()> {
    if rest.is_empty() {
        Ok(())
    } else {
        fail(at, format!("{} stray bytes", rest.len()))
    }
}

/// Checks the framing of a whole PKCS#10 `CertificationRequest` (RFC 2986 § 4).
pub fn check_request(der: &[u8]) -> Result<()> {
    let (request, rest) = expect(der, SEQUENCE, "request")?;
    done(rest, "request")?;
    let (info, rest) = expect(request, SEQUENCE, "request.info")?;
    check_info(info)?;
    let (algorithm, rest) = expect(rest, SEQUENCE, "request.signatureAlgorithm")?;
    check_algorithm(algorithm, "request.signatureAlgorithm")?;
    let (signature, rest) = expect(rest, BIT_STRING, "request.signature")?;
    check_bit_string(signature, "request.signature")?;
    done(rest, "request")
}

fn check_info(info: &[u8]) -> Result<()> {
    let (version, rest) = expect(info, INTEGER, "request.info.version")?;
    check_integer(version, "request.info.version")?;
    let (subject, rest) = expect(rest, SEQUENCE, "request.info.subject")?;
    check_name(subject)?;
    let (spki, rest) = expect(rest, SEQUENCE, "request.info.subjectPKInfo")?;
    let (algorithm, key) = expect(spki, SEQUENCE, "request.info.subjectPKInfo.algorithm")?;
    check_algorithm(algorithm, "request.info.subjectPKInfo.algorithm")?;
    let (key, rest_of_spki) = expect(key, BIT_STRING, "request.info.subjectPKInfo.key")?;
    check_bit_string(key, "request.info.subjectPKInfo.key")?;
    done(rest_of_spki, "request.info.subjectPKInfo")?;
    let (attributes, rest) = expect(rest, ATTRIBUTES, "request.info.attributes")?;
    check_attributes(attributes)?;
    done(rest, "request.info")
}

/// `Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }`.
fn check_name(mut rdns: &[u8]) -> Result<()> {
    const AT: &str = "request.info.subject";
    while !rdns.is_empty() {
        let (mut set, rest) = expect(rdns, SET, AT)?;
        if set.is_empty() {
            return fail(AT, "an empty relative distinguished name");
        }
        while !set.is_empty() {
            let (pair, more) = expect(set, SEQUENCE, AT)?;
            let (oid, value) = expect(pair, OID, AT)?;
            check_oid(oid, AT)?;
            let (value, end) = read(value, AT)?;
            check_open(value, AT, 0)?;
            done(end, AT)?;
            set = more;
        }
        rdns = rest;
    }
    Ok(())
}

/// `AlgorithmIdentifier ::= SEQUENCE { algorithm OID, parameters ANY OPTIONAL }`.
fn check_algorithm(content: &[u8], at: &'static str) -> Result<()> {
    let (oid, rest) = expect(content, OID, at)?;
    check_oid(oid, at)?;
    if rest.is_empty() {
        return Ok(());
    }
    let (parameters, rest) = read(rest, at)?;
    check_open(parameters, at, 0)?;
    done(rest, at)
}

/// `[0] IMPLICIT SET OF SEQUENCE { type OID, values SET OF ANY }`; the values of an
/// extensionRequest are `SEQUENCE OF Extension`.
fn check_attributes(mut attributes: &[u8]) -> Result<()> {
    const AT: &str = "request.info.attributes";
    while !attributes.is_empty() {
        let (attribute, rest) = expect(attributes, SEQUENCE, AT)?;
        let (oid, values) = expect(attribute, OID, AT)?;
        check_oid(oid, AT)?;
        let (mut values, end) = expect(values, SET, AT)?;
        done(end, AT)?;
        while !values.is_empty() {
            let (value, more) = read(values, AT)?;
            if oid == EXTENSION_REQUEST_OID {
                if value.tag != SEQUENCE {
                    return fail(
                        "request.info.attributes.extensionRequest",
                        format!("tag 0x{:02x} where 0x{SEQUENCE:02x} belongs", value.tag),
                    );
                }
                check_extensions(value.content)?;
            } else {
                check_open(value, AT, 0)?;
            }
            values = more;
        }
        attributes = rest;
    }
    Ok(())
}

/// `Extension ::= SEQUENCE { extnID OID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING }`.
fn check_extensions(mut extensions: &[u8]) -> Result<()> {
    const AT: &str = "request.info.attributes.extensionRequest";
    while !extensions.is_empty() {
        let (extension, rest) = expect(extensions, SEQUENCE, AT)?;
        let (oid, mut fields) = expect(extension, OID, AT)?;
        check_oid(oid, AT)?;
        let (next, _) = read(fields, AT)?;
        if next.tag == BOOLEAN {
            let (critical, after) = expect(fields, BOOLEAN, AT)?;
            check_boolean(critical, AT)?;
            fields = after;
        }
        let (_value, end) = expect(fields, OCTET_STRING, AT)?;
        done(end, AT)?;
        extensions = rest;
    }
    Ok(())
}

/// A value the structure leaves open: of the universal class, its DER rules kept, and
/// (when constructed) every element inside it well framed.
fn check_open(tlv: Tlv<'_>, at: &'static str, depth: usize) -> Result<()> {
    if depth == 0 && tlv.tag & CLASS_MASK != 0 {
        return fail(
            at,
            format!("tag 0x{:02x} is not of the universal class", tlv.tag),
        );
    }
    if tlv.tag & CLASS_MASK != 0 && tlv.tag & CONSTRUCTED == 0 {
        return Ok(());
    }
    match tlv.tag {
        BOOLEAN => check_boolean(tlv.content, at),
        INTEGER => check_integer(tlv.content, at),
        OID => check_oid(tlv.content, at),
        BIT_STRING => check_bit_string(tlv.content, at),
        tag if tag & CONSTRUCTED != 0 => {
            if depth >= MAX_OPEN_DEPTH {
                return fail(at, "nested too deeply");
            }
            let mut inner = tlv.content;
            while !inner.is_empty() {
                let (element, rest) = read(inner, at)?;
                check_open(element, at, depth + 1)?;
                inner = rest;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

fn check_boolean(content: &[u8], at: &'static str) -> Result<()> {
    match content {
        [0x00] | [0xff] => Ok(()),
        _ => fail(at, "a BOOLEAN that is not one byte 0x00 or 0xff"),
    }
}

fn check_integer(content: &[u8], at: &'static str) -> Result<()> {
    match content {
        [] => fail(at, "an empty INTEGER"),
        [0x00, next, ..] if next & 0x80 == 0 => fail(at, "an INTEGER not minimally encoded"),
        [0xff, next, ..] if next & 0x80 != 0 => fail(at, "an INTEGER not minimally encoded"),
        _ => Ok(()),
    }
}

fn check_oid(content: &[u8], at: &'static str) -> Result<()> {
    // Every subidentifier ends with a byte below 0x80 and has no leading 0x80.
    let Some(last) = content.last() else {
        return fail(at, "an empty OBJECT IDENTIFIER");
    };
    let leading_zero = content
        .iter()
        .enumerate()
        .any(|(i, b)| *b == 0x80 && (i == 0 || content[i - 1] & 0x80 == 0));
    if last & 0x80 != 0 || leading_zero {
        return fail(at, "a malformed OBJECT IDENTIFIER");
    }
    Ok(())
}

fn check_bit_string(content: &[u8], at: &'static str) -> Result<()> {
    match content {
        [] => fail(at, "an empty BIT STRING"),
        [0, ..] => Ok(()),
        [unused, ..] if *unused > 7 => fail(at, "a BIT STRING with more than 7 unused bits"),
        [_] => fail(at, "a BIT STRING with unused bits but no data"),
        [unused, .., last] if last & ((1u8 << unused) - 1) != 0 => {
            fail(at, "a BIT STRING whose unused bits are not zero")
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        if content.len() < 0x80 {
            out.push(u8::try_from(content.len()).expect("short"));
        } else {
            out.push(0x82);
            out.extend(u16::try_from(content.len()).expect("fits").to_be_bytes());
        }
        out.extend(content);
        out
    }

    #[test]
    fn lengths_must_be_definite_and_minimal() {
        assert!(read(&[0x04, 0x01, 0xaa], "t").is_ok());
        for bad in [
            &[0x04, 0x81, 0x01, 0xaa][..],
            &[0x04, 0x82, 0x00, 0x01, 0xaa],
            &[0x30, 0x80, 0x00, 0x00],
            &[0x04, 0x02, 0xaa],
            &[0x1f, 0x81, 0x01, 0x00],
            &[0x04],
        ] {
            assert!(read(bad, "t").is_err(), "{bad:x?}");
        }
    }

    #[test]
    fn integers_booleans_oids_and_bit_strings_are_der() {
        assert!(check_integer(&[0x00], "t").is_ok());
        assert!(check_integer(&[0x00, 0x80], "t").is_ok());
        assert!(check_integer(&[0x00, 0x01], "t").is_err());
        assert!(check_integer(&[0xff, 0x80], "t").is_err());
        assert!(check_boolean(&[0x01], "t").is_err());
        assert!(check_oid(&[0x2a, 0x86], "t").is_err());
        assert!(check_oid(&[0x2a, 0x86, 0x48], "t").is_ok());
        assert!(check_oid(&[0x2a, 0x80, 0x01], "t").is_err());
        assert!(check_oid(&[0x2a, 0x03], "t").is_ok());
        assert!(check_bit_string(&[0x00, 0xff], "t").is_ok());
        assert!(check_bit_string(&[0x01, 0xfe], "t").is_ok());
        assert!(check_bit_string(&[0x01, 0xff], "t").is_err());
        assert!(check_bit_string(&[0x08, 0x00], "t").is_err());
    }

    #[test]
    fn open_values_must_be_universal() {
        let printable = tlv(0x13, b"x");
        let (v, _) = read(&printable, "t").expect("tlv");
        assert!(check_open(v, "t", 0).is_ok());
        let application = tlv(0x53, b"x");
        let (v, _) = read(&application, "t").expect("tlv");
        assert!(check_open(v, "t", 0).is_err());
        // Inside a universal value, context tags are fine (RSASSA-PSS parameters)...
        let nested = tlv(SEQUENCE, &tlv(0xa0, &tlv(0x02, &[0x20])));
        let (v, _) = read(&nested, "t").expect("tlv");
        assert!(check_open(v, "t", 0).is_ok());
        // ...but still DER.
        let nested = tlv(SEQUENCE, &tlv(0xa0, &tlv(0x02, &[0x00, 0x20])));
        let (v, _) = read(&nested, "t").expect("tlv");
        assert!(check_open(v, "t", 0).is_err());
    }
}
