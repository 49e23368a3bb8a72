//! Label selectors: parsed requirements matched against [`Labels`].
//!
//! Equality selectors from `spec.selector` are the common case; they parse into `Equals` requirements whose
//! interned values usually compare by pointer. Selector strings (the `roster.dev/selector` annotation) accept
//! the Kubernetes string syntax: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use super::interner::Interner;
use super::labels::Labels;

/// Why a selector string was rejected. The controller reports it as a Warning Event on the Service.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid label selector {selector:?}: {reason}")]
pub struct SelectorError {
    pub selector: String,
    pub reason: String,
}

/// One requirement on one label key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Requirement {
    pub key: Arc<str>,
    pub operator: Operator,
}

/// How a [`Requirement`] tests the label value. Set values are sorted and deduplicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Operator {
    Equals(Arc<str>),
    NotEquals(Arc<str>),
    In(Box<[Arc<str>]>),
    NotIn(Box<[Arc<str>]>),
    Exists,
    DoesNotExist,
}

/// A parsed label selector: every requirement must hold. Requirements are kept in canonical order, so equal
/// selectors compare equal and print the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Selector {
    requirements: Box<[Requirement]>,
}

fn same_str(a: &Arc<str>, b: &Arc<str>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match (&self.operator, value) {
            (Operator::Equals(want), Some(have)) => same_str(want, have),
            (Operator::Equals(_), None) => false,
            (Operator::NotEquals(want), Some(have)) => !same_str(want, have),
            (Operator::NotEquals(_), None) => true,
            (Operator::In(set), Some(have)) => set.iter().any(|v| same_str(v, have)),
            (Operator::In(_), None) => false,
            (Operator::NotIn(set), Some(have)) => !set.iter().any(|v| same_str(v, have)),
            (Operator::NotIn(_), None) => true,
            (Operator::Exists, have) => have.is_some(),
            (Operator::DoesNotExist, have) => have.is_none(),
        }
    }
}

impl Selector {
    /// The selector of `spec.selector`: one equality requirement per entry.
    pub fn from_map(map: &BTreeMap<String, String>, interner: &mut Interner) -> Self {
        let requirements = map
            .iter()
            .map(|(k, v)| Requirement {
                key: interner.intern(k),
                operator: Operator::Equals(interner.intern(v)),
            })
            .collect();
        Self::canonical(requirements)
    }

    /// Parses a selector string. An empty string is rejected: it would select every pod in the namespace,
    /// which is never what an annotation means.
    pub fn parse(text: &str, interner: &mut Interner) -> Result<Self, SelectorError> {
        let error = |reason: String| SelectorError {
            selector: text.to_owned(),
            reason,
        };
        let tokens = lex(text).map_err(error)?;
        if tokens.is_empty() {
            return Err(error("empty selector selects every pod".to_owned()));
        }
        let mut parser = Parser {
            tokens: &tokens,
            pos: 0,
            interner,
        };
        let requirements = parser.requirements().map_err(error)?;
        Ok(Self::canonical(requirements))
    }

    fn canonical(mut requirements: Vec<Requirement>) -> Self {
        requirements.sort();
        requirements.dedup();
        Selector {
            requirements: requirements.into(),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// The `(key, value)` pairs of the equality requirements, which the label index can look up.
    pub fn equality_pairs(&self) -> impl Iterator<Item = (&Arc<str>, &Arc<str>)> {
        self.requirements.iter().filter_map(|r| match &r.operator {
            Operator::Equals(v) => Some((&r.key, v)),
            _ => None,
        })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = &self.key;
        let join = |set: &[Arc<str>]| set.iter().map(|v| v.as_ref()).collect::<Vec<_>>().join(",");
        match &self.operator {
            Operator::Equals(v) => write!(f, "{key}={v}"),
            Operator::NotEquals(v) => write!(f, "{key}!={v}"),
            Operator::In(set) => write!(f, "{key} in ({})", join(set)),
            Operator::NotIn(set) => write!(f, "{key} notin ({})", join(set)),
            Operator::Exists => write!(f, "{key}"),
            Operator::DoesNotExist => write!(f, "!{key}"),
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, requirement) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{requirement}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Word(String),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Comma,
    Open,
    Close,
    Compare(char),
}

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let token = match c {
            c if c.is_whitespace() => continue,
            ',' => Token::Comma,
            '(' => Token::Open,
            ')' => Token::Close,
            '<' | '>' => Token::Compare(c),
            '=' if chars.next_if_eq(&'=').is_some() => Token::DoubleEquals,
            '=' => Token::Equals,
            '!' if chars.next_if_eq(&'=').is_some() => Token::NotEquals,
            '!' => Token::Bang,
            _ => {
                let mut word = c.to_string();
                while let Some(next) = chars.next_if(|n| !n.is_whitespace() && !",()<>=!".contains(*n)) {
                    word.push(next);
                }
                Token::Word(word)
            }
        };
        tokens.push(token);
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    interner: &'a mut Interner,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<&Token> {
        let token = self.tokens.get(self.pos);
        self.pos += 1;
        token
    }

    fn requirements(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = vec![self.requirement()?];
        while let Some(token) = self.next() {
            if *token != Token::Comma {
                return Err(format!("expected ',' between requirements, found {token:?}"));
            }
            requirements.push(self.requirement()?);
        }
        Ok(requirements)
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        if self.peek() == Some(&Token::Bang) {
            self.pos += 1;
            let key = self.key()?;
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
            });
        }
        let key = self.key()?;
        let operator = match self.peek().cloned() {
            None | Some(Token::Comma) => Operator::Exists,
            Some(Token::Equals | Token::DoubleEquals) => {
                self.pos += 1;
                Operator::Equals(self.single_value()?)
            }
            Some(Token::NotEquals) => {
                self.pos += 1;
                Operator::NotEquals(self.single_value()?)
            }
            Some(Token::Word(word)) if word == "in" || word == "notin" => {
                self.pos += 1;
                let set = self.value_set()?;
                if word == "in" {
                    Operator::In(set)
                } else {
                    Operator::NotIn(set)
                }
            }
            Some(Token::Compare(c)) => {
                return Err(format!("operator '{c}' is not supported in Service selectors"));
            }
            Some(other) => return Err(format!("expected an operator after key {key:?}, found {other:?}")),
        };
        Ok(Requirement { key, operator })
    }

    fn key(&mut self) -> Result<Arc<str>, String> {
        match self.next() {
            Some(Token::Word(word)) => {
                let word = word.clone();
                validate_key(&word)?;
                Ok(self.interner.intern(&word))
            }
            other => Err(format!("expected a label key, found {other:?}")),
        }
    }

    fn single_value(&mut self) -> Result<Arc<str>, String> {
        let value = match self.peek() {
            None | Some(Token::Comma) => String::new(),
            Some(Token::Word(word)) => {
                let word = word.clone();
                self.pos += 1;
                word
            }
            Some(other) => return Err(format!("expected a label value, found {other:?}")),
        };
        validate_value(&value)?;
        Ok(self.interner.intern(&value))
    }

    fn value_set(&mut self) -> Result<Box<[Arc<str>]>, String> {
        if self.next() != Some(&Token::Open) {
            return Err("expected '(' after 'in' or 'notin'".to_owned());
        }
        let mut values = Vec::new();
        loop {
            match self.next().cloned() {
                Some(Token::Word(word)) => {
                    validate_value(&word)?;
                    values.push(self.interner.intern(&word));
                }
                other => return Err(format!("expected a label value in set, found {other:?}")),
            }
            match self.next() {
                Some(Token::Comma) => continue,
                Some(Token::Close) => break,
                other => return Err(format!("expected ',' or ')' in value set, found {other:?}")),
            }
        }
        values.sort();
        values.dedup();
        Ok(values.into())
    }
}

fn is_name_part(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alnum = |b: &u8| b.is_ascii_alphanumeric();
    !bytes.is_empty()
        && bytes.len() <= 63
        && alnum(&bytes[0])
        && alnum(&bytes[bytes.len() - 1])
        && bytes.iter().all(|b| alnum(b) || b"-_.".contains(b))
}

fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253
        && text.split('.').all(|label| {
            let bytes = label.as_bytes();
            let ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            !bytes.is_empty()
                && ok(&bytes[0])
                && ok(&bytes[bytes.len() - 1])
                && bytes.iter().all(|b| ok(b) || *b == b'-')
        })
}

fn validate_key(key: &str) -> Result<(), String> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_name_part(name),
        None => is_name_part(key),
    };
    if valid {
        Ok(())
    } else {
        Err(format!("invalid label key {key:?}"))
    }
}

fn validate_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_name_part(value) {
        Ok(())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)], interner: &mut Interner) -> Labels {
        Labels::from_pairs(pairs.iter().copied(), interner)
    }

    #[test]
    fn selector_parsing_gives_canonical_form() {
        let cases = [
            ("app=web", "app=web"),
            ("app == web", "app=web"),
            ("tier!=db,app=web", "app=web,tier!=db"),
            ("env in (prod, dev,prod)", "env in (dev,prod)"),
            ("env notin (qa)", "env notin (qa)"),
            ("canary", "canary"),
            ("!canary", "!canary"),
            ("example.com/team=a, version=", "example.com/team=a,version="),
            ("app=web,app=web", "app=web"),
        ];
        for (input, want) in cases {
            let mut interner = Interner::new();
            let selector = Selector::parse(input, &mut interner).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(selector.to_string(), want, "input {input:?}");
        }
    }

    #[test]
    fn selector_parse_errors_are_reported() {
        let cases = [
            ("", "empty selector"),
            ("   ", "empty selector"),
            ("app=web,", "expected a label key"),
            ("app in web", "expected '('"),
            ("app in ()", "expected a label value in set"),
            ("app in (a b)", "expected ',' or ')'"),
            ("app > 3", "not supported"),
            ("-app=web", "invalid label key"),
            ("Example.com/app=web", "invalid label key"),
            ("app=web!", "expected ','"),
            ("app=-x", "invalid label value"),
            ("app=web tier=db", "expected ','"),
            ("=web", "expected a label key"),
        ];
        for (input, want) in cases {
            let mut interner = Interner::new();
            let error = Selector::parse(input, &mut interner).expect_err(input);
            assert_eq!(error.selector, input);
            assert!(
                error.reason.contains(want),
                "input {input:?}: reason {:?} lacks {want:?}",
                error.reason
            );
        }
    }

    #[test]
    fn selector_matches_label_sets() {
        let mut interner = Interner::new();
        let pod = labels(&[("app", "web"), ("env", "prod"), ("canary", "")], &mut interner);
        let bare = labels(&[("app", "web")], &mut interner);
        let cases = [
            ("app=web", true, true),
            ("app=db", false, false),
            ("app=web,env=prod", true, false),
            ("env!=dev", true, true),
            ("env!=prod", false, true),
            ("env in (prod,dev)", true, false),
            ("env notin (prod)", false, true),
            ("canary", true, false),
            ("!canary", false, true),
            ("canary=", true, false),
        ];
        for (input, want_pod, want_bare) in cases {
            let selector = Selector::parse(input, &mut interner).unwrap();
            assert_eq!(selector.matches(&pod), want_pod, "{input} on pod");
            assert_eq!(selector.matches(&bare), want_bare, "{input} on bare");
        }
    }

    #[test]
    fn map_selector_lists_equality_pairs() {
        let mut interner = Interner::new();
        let map = BTreeMap::from([
            ("tier".to_owned(), "web".to_owned()),
            ("app".to_owned(), "shop".to_owned()),
        ]);
        let selector = Selector::from_map(&map, &mut interner);
        assert_eq!(selector.to_string(), "app=shop,tier=web");
        let pairs: Vec<_> = selector
            .equality_pairs()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(pairs, ["app=shop", "tier=web"]);
    }
}
