//! Label and field selectors, parsed once from the query string and matched against stored objects.

use super::resources::ResourceKind;
use super::status::ApiError;

/// One label requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
enum LabelReq {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
    Gt(String, i64),
    Lt(String, i64),
}

/// A parsed label selector (`a=b,c!=d,e in (x,y),!f`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    reqs: Vec<LabelReq>,
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn check_key(key: &str, whole: &str) -> Result<String, ApiError> {
    if key.is_empty() || !key.chars().all(is_label_char) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label key {key:?} in selector {whole:?}"
        )));
    }
    Ok(key.to_owned())
}

fn check_value(value: &str, whole: &str) -> Result<String, ApiError> {
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label value {value:?} in selector {whole:?}"
        )));
    }
    Ok(value.to_owned())
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, ApiError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "unable to parse requirement: found '{rest}', expected: '(' … ')' in selector {whole:?}"
            ))
        })?;
    inner
        .split(',')
        .map(|v| check_value(v.trim(), whole))
        .collect()
}

// === impl LabelSelector ===

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                return Err(ApiError::bad_request(format!(
                    "unable to parse requirement: empty requirement in selector {s:?}"
                )));
            }
            if let Some(key) = part.strip_prefix('!') {
                reqs.push(LabelReq::NotExists(check_key(key.trim(), s)?));
            } else if let Some((k, v)) = part.split_once("!=") {
                reqs.push(LabelReq::NotEq(
                    check_key(k.trim(), s)?,
                    check_value(v.trim(), s)?,
                ));
            } else if let Some((k, v)) = part.split_once("==") {
                reqs.push(LabelReq::Eq(
                    check_key(k.trim(), s)?,
                    check_value(v.trim(), s)?,
                ));
            } else if let Some((k, v)) = part.split_once('=') {
                reqs.push(LabelReq::Eq(
                    check_key(k.trim(), s)?,
                    check_value(v.trim(), s)?,
                ));
            } else if let Some((k, v)) = part.split_once(" notin ") {
                reqs.push(LabelReq::NotIn(check_key(k.trim(), s)?, parse_set(v, s)?));
            } else if let Some((k, v)) = part.split_once(" in ") {
                reqs.push(LabelReq::In(check_key(k.trim(), s)?, parse_set(v, s)?));
            } else if let Some((k, v)) = part.split_once('>') {
                let n = v.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer in selector {s:?}"
                    ))
                })?;
                reqs.push(LabelReq::Gt(check_key(k.trim(), s)?, n));
            } else if let Some((k, v)) = part.split_once('<') {
                let n = v.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!(
                        "unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer in selector {s:?}"
                    ))
                })?;
                reqs.push(LabelReq::Lt(check_key(k.trim(), s)?, n));
            } else {
                reqs.push(LabelReq::Exists(check_key(part, s)?));
            }
        }
        Ok(Self { reqs })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// Whether an object with these labels is selected.
    pub fn matches(&self, labels: &[(Box<str>, Box<str>)]) -> bool {
        let get = |k: &str| labels.iter().find(|(lk, _)| &**lk == k).map(|(_, v)| &**v);
        self.reqs.iter().all(|r| match r {
            LabelReq::Eq(k, v) => get(k) == Some(v.as_str()),
            LabelReq::NotEq(k, v) => get(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::NotIn(k, vs) => !get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            LabelReq::Exists(k) => get(k).is_some(),
            LabelReq::NotExists(k) => get(k).is_none(),
            LabelReq::Gt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            LabelReq::Lt(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// One field requirement: label, wanted value, equal or not.
#[derive(Clone, Debug, PartialEq, Eq)]
struct FieldReq {
    label: String,
    value: String,
    equal: bool,
}

/// A parsed field selector (`metadata.name=x,spec.signerName!=y`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    reqs: Vec<FieldReq>,
}

fn unescape_field_value(v: &str) -> Result<String, String> {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(e @ ('\\' | ',' | '=')) => out.push(e),
                Some(e) => return Err(format!("invalid escape sequence: \\{e}")),
                None => return Err("unterminated escape sequence".to_owned()),
            },
            ',' | '=' => return Err(format!("invalid field selector value: {v:?}")),
            c => out.push(c),
        }
    }
    Ok(out)
}

fn split_unescaped(s: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
        } else if c == '\\' {
            escaped = true;
        } else if c == sep {
            parts.push(&s[start..i]);
            start = i + c.len_utf8();
        }
    }
    parts.push(&s[start..]);
    parts
}

// === impl FieldSelector ===

impl FieldSelector {
    /// Parses the `fieldSelector` query parameter and checks every label is
    /// supported by `kind` (400 otherwise, like the real server).
    pub fn parse(s: &str, kind: &ResourceKind) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self { reqs });
        }
        for part in split_unescaped(s, ',') {
            let (label, value, equal) = if let Some(i) = part.find("!=") {
                (&part[..i], &part[i + 2..], false)
            } else if let Some(i) = part.find("==") {
                (&part[..i], &part[i + 2..], true)
            } else if let Some(i) = part.find('=') {
                (&part[..i], &part[i + 1..], true)
            } else {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: {s:?}: {part:?} is not a selector"
                )));
            };
            let label = label.trim();
            if !kind.supports_field(label) {
                return Err(ApiError::bad_request(format!(
                    "field label not supported: {label}"
                )));
            }
            let value = unescape_field_value(value)
                .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
            reqs.push(FieldReq {
                label: label.to_owned(),
                value,
                equal,
            });
        }
        Ok(Self { reqs })
    }

    /// Whether it selects everything.
    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }

    /// `metadata.name=X` if that is required, for a direct lookup.
    pub fn exact_name(&self) -> Option<&str> {
        self.reqs
            .iter()
            .find(|r| r.equal && r.label == "metadata.name")
            .map(|r| r.value.as_str())
    }

    /// Whether an object with these field values is selected.
    pub fn matches(
        &self,
        kind: &ResourceKind,
        namespace: &str,
        name: &str,
        values: &[Box<str>],
    ) -> bool {
        self.reqs.iter().all(|r| {
            let actual = match r.label.as_str() {
                "metadata.name" => name,
                "metadata.namespace" => namespace,
                other => kind
                    .field_labels
                    .iter()
                    .position(|l| *l == other)
                    .and_then(|i| values.get(i))
                    .map_or("", |v| &**v),
            };
            (actual == r.value) == r.equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::{ids, kind};

    fn labels(pairs: &[(&str, &str)]) -> Vec<(Box<str>, Box<str>)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn label_selector_operators() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        let yes = [
            "app=web",
            "app==web",
            "app!=db",
            "app in (web,db)",
            "tier notin (back)",
            "app",
            "!missing",
            "n>3",
            "n<6",
            "app=web,tier=front",
        ];
        for s in yes {
            assert!(LabelSelector::parse(s).expect(s).matches(&l), "{s}");
        }
        let no = [
            "app=db",
            "app!=web",
            "app in (db)",
            "tier notin (front)",
            "missing",
            "!app",
            "n>5",
        ];
        for s in no {
            assert!(!LabelSelector::parse(s).expect(s).matches(&l), "{s}");
        }
        assert!(LabelSelector::parse("app in web").is_err());
        assert!(LabelSelector::parse("a=b c").is_err());
    }

    #[test]
    fn field_selector_checks_supported_labels() {
        let csr = kind(ids::csrs());
        let f =
            FieldSelector::parse("spec.signerName=kubernetes.io/kubelet-serving", csr).expect("ok");
        assert!(f.matches(csr, "", "x", &["kubernetes.io/kubelet-serving".into()]));
        assert!(!f.matches(csr, "", "x", &["other".into()]));
        let not = FieldSelector::parse("metadata.name!=x", csr).expect("ok");
        assert!(!not.matches(csr, "", "x", &["".into()]));
        assert!(not.matches(csr, "", "y", &["".into()]));
        let err = FieldSelector::parse("spec.username=x", csr).expect_err("unsupported");
        assert_eq!(err.code, 400);
        assert!(
            err.message
                .contains("field label not supported: spec.username")
        );
        assert!(
            FieldSelector::parse("metadata.namespace=x", csr).is_err(),
            "cluster-scoped"
        );
    }
}
