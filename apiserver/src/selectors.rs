//! Label selectors (`k=v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`) and field selectors
//! (`f=v`, `f==v`, `f!=v`), parsed from query strings and matched against stored objects.

use super::registry::ResourceType;
use super::store::Obj;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl Requirement {
    fn matches(&self, obj: &Obj) -> bool {
        match self {
            Requirement::Equals(k, v) => obj.label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => obj.label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => obj.label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Requirement::NotIn(k, vs) => obj.label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            Requirement::Exists(k) => obj.label(k).is_some(),
            Requirement::DoesNotExist(k) => obj.label(k).is_none(),
        }
    }
}

/// A parsed label selector; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector(Vec<Requirement>);

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Op(&'static str),
}

fn tokenize(s: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            ' ' | '\t' => {
                chars.next();
            }
            ',' | '(' | ')' => {
                chars.next();
                tokens.push(Token::Op(match c {
                    ',' => ",",
                    '(' => "(",
                    _ => ")",
                }));
            }
            '=' | '!' => {
                chars.next();
                let op = match (c, chars.peek()) {
                    ('=', Some('=')) => "==",
                    ('!', Some('=')) => "!=",
                    ('=', _) => "=",
                    _ => "!",
                };
                if op.len() == 2 {
                    chars.next();
                }
                tokens.push(Token::Op(op));
            }
            _ => {
                let mut word = String::new();
                while let Some(&c) = chars.peek() {
                    if " \t,()=!".contains(c) {
                        break;
                    }
                    word.push(c);
                    chars.next();
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    tokens
}

fn valid_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && (v.is_empty()
            || (v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric())))
}

fn valid_label_key(k: &str) -> bool {
    let name = match k.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return false;
            }
            name
        }
        None => k,
    };
    !name.is_empty() && valid_label_value(name)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        t
    }

    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn key(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Token::Word(k)) if valid_label_key(&k) => Ok(k),
            Some(Token::Word(k)) => Err(format!("invalid label key \"{k}\"")),
            other => Err(format!("found '{other:?}', expected: identifier")),
        }
    }

    fn value(&mut self) -> Result<String, String> {
        match self.peek() {
            Some(Token::Word(_)) => match self.next() {
                Some(Token::Word(v)) if valid_label_value(&v) => Ok(v),
                Some(Token::Word(v)) => Err(format!("invalid label value: \"{v}\"")),
                _ => unreachable!(),
            },
            _ => Ok(String::new()),
        }
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        if self.next() != Some(Token::Op("(")) {
            return Err("expected '(' after set operator".into());
        }
        let mut values = Vec::new();
        loop {
            values.push(self.value()?);
            match self.next() {
                Some(Token::Op(",")) => continue,
                Some(Token::Op(")")) => return Ok(values),
                _ => return Err("expected ',' or ')' in value set".into()),
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Op("!")) {
            self.next();
            return Ok(Requirement::DoesNotExist(self.key()?));
        }
        let key = self.key()?;
        match self.peek().cloned() {
            None | Some(Token::Op(",")) => Ok(Requirement::Exists(key)),
            Some(Token::Op("=" | "==")) => {
                self.next();
                Ok(Requirement::Equals(key, self.value()?))
            }
            Some(Token::Op("!=")) => {
                self.next();
                Ok(Requirement::NotEquals(key, self.value()?))
            }
            Some(Token::Word(w)) if w == "in" || w == "notin" => {
                self.next();
                let values = self.values()?;
                Ok(if w == "in" {
                    Requirement::In(key, values)
                } else {
                    Requirement::NotIn(key, values)
                })
            }
            Some(t) => Err(format!("found '{t:?}', expected: in, notin, =, ==, !=, or ','")),
        }
    }
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<LabelSelector, String> {
        let mut parser = Parser {
            tokens: tokenize(s),
            pos: 0,
        };
        let mut reqs = Vec::new();
        while parser.peek().is_some() {
            reqs.push(
                parser
                    .requirement()
                    .map_err(|e| format!("unable to parse requirement: {e}"))?,
            );
            match parser.next() {
                None => break,
                Some(Token::Op(",")) if parser.peek().is_some() => {}
                _ => {
                    return Err(format!(
                        "unable to parse requirement: unexpected input in \"{s}\""
                    ));
                }
            }
        }
        Ok(LabelSelector(reqs))
    }

    pub fn matches(&self, obj: &Obj) -> bool {
        self.0.iter().all(|r| r.matches(obj))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A parsed field selector: (label, value, equal?) terms.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector(Vec<(String, String, bool)>);

impl FieldSelector {
    /// Parses `s`, rejecting labels `rt` does not support.
    pub fn parse(s: &str, rt: &ResourceType) -> Result<FieldSelector, String> {
        let mut terms = Vec::new();
        for term in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (field, value, eq) = if let Some((f, v)) = term.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = term.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = term.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{term}'"));
            };
            let field = field.trim();
            if !rt.supports_field(field) {
                return Err(format!("field label not supported: {field}"));
            }
            terms.push((field.to_string(), value.trim().to_string(), eq));
        }
        Ok(FieldSelector(terms))
    }

    pub fn matches(&self, obj: &Obj) -> bool {
        self.0
            .iter()
            .all(|(f, v, eq)| (obj.field(f).unwrap_or("") == v) == *eq)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The name `metadata.name=X` pins, if any (lets GET-like watches skip a scan).
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(f, _, eq)| f == "metadata.name" && *eq)
            .map(|(_, v, _)| v.as_str())
    }
}

/// Label and field selectors of one list or watch.
#[derive(Clone, Debug, Default)]
pub(crate) struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, obj: &Obj) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use serde_json::json;

    fn pod(labels: serde_json::Value, node: &str) -> Obj {
        let rt = Registry::new().builtin("", "pods");
        let v = json!({"metadata": {"name": "p", "namespace": "d", "labels": labels}, "spec": {"nodeName": node}, "status": {"phase": "Running"}});
        Obj::new(&v, 1, rt.fields)
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap()
    }

    #[test]
    fn label_selector_syntax() {
        let p = pod(json!({"app": "web", "tier": "front"}), "n1");
        assert!(sel("").matches(&p));
        assert!(sel("app=web").matches(&p));
        assert!(sel("app==web,tier=front").matches(&p));
        assert!(!sel("app!=web").matches(&p));
        assert!(sel("app in (web, db)").matches(&p));
        assert!(!sel("app notin (web,db)").matches(&p));
        assert!(sel("env notin (prod)").matches(&p));
        assert!(sel("app,!env").matches(&p));
        assert!(!sel("!app").matches(&p));
        assert!(sel("example.com/x!=y").matches(&p));
    }

    #[test]
    fn label_selector_errors() {
        for bad in [
            "app=",
            "app in web",
            "=x",
            "app=web,",
            "a b",
            "app in (a",
            "bad key!=x",
            "k=v v",
        ] {
            if bad == "app=" {
                assert!(LabelSelector::parse(bad).is_ok(), "empty value is valid");
                continue;
            }
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn field_selector_on_pods() {
        let rt = Registry::new().builtin("", "pods");
        let p = pod(json!({}), "n1");
        let f = |s: &str| FieldSelector::parse(s, &rt).unwrap();
        assert!(f("spec.nodeName=n1,status.phase=Running").matches(&p));
        assert!(f("metadata.name==p,metadata.namespace=d").matches(&p));
        assert!(!f("spec.nodeName!=n1").matches(&p));
        assert!(f("spec.hostNetwork=false").matches(&p));
        let err = FieldSelector::parse("spec.foo=x", &rt).unwrap_err();
        assert_eq!(err, "field label not supported: spec.foo");
    }
}
