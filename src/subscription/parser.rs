//! Turns tokens into the condition tree, step for step like the reference's
//! parser, which reads tokens by position rather than by grammar: a field
//! takes the next two tokens as operator and value whatever they are, a
//! function call takes the next five, unknown tokens are skipped, and the
//! last `and`/`or` of a group decides how the whole group combines.

use std::collections::HashSet;

use super::ast::{Condition, Expected, Field, GroupOp, Node, Op, Path};
use super::js;
use super::lexer::{Token, TokenKind};
use super::FqlError;

/// At most this many warnings are kept (a pathological trigger could
/// otherwise produce one per token).
const MAX_WARNINGS: usize = 16;
/// At most this many ignored tokens are listed.
const MAX_IGNORED_SHOWN: usize = 8;

/// The result of parsing: the tree and the quirks it relies on.
pub(crate) struct Parsed {
    pub(crate) root: Node,
    pub(crate) warnings: Vec<String>,
}

/// Parses the tokens of a whole trigger.
pub(crate) fn parse(tokens: Vec<Token>, source_chars: usize) -> Result<Parsed, FqlError> {
    let mut parser = Parser {
        end: source_chars,
        warnings: Vec::new(),
        ignored: Vec::new(),
    };
    let root = parser.group(normalize(tokens), 0)?;
    if root == Node::Hole {
        return Err(FqlError {
            message: "the trigger has no condition: only type, event, name, userId, \
                      properties.*, traits.*, context.*, contains() and match() form one"
                .to_string(),
            position: 0,
        });
    }
    if !parser.ignored.is_empty() {
        let shown = parser.ignored.get(..MAX_IGNORED_SHOWN).unwrap_or(&parser.ignored);
        let mut list = shown.join(", ");
        if parser.ignored.len() > shown.len() {
            list.push_str(&format!(" and {} more", parser.ignored.len() - shown.len()));
        }
        parser.warnings.push(format!("ignored: {list}"));
    }
    let mut seen = HashSet::new();
    let mut warnings: Vec<String> = Vec::new();
    for warning in parser.warnings {
        if warnings.len() == MAX_WARNINGS {
            break;
        }
        if seen.insert(warning.clone()) {
            warnings.push(warning);
        }
    }
    Ok(Parsed { root, warnings })
}

/// Joins `ident . ident` into one identifier (`properties.a.b`).
fn normalize(tokens: Vec<Token>) -> Vec<Token> {
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut rest = tokens.into_iter().peekable();
    while let Some(token) = rest.next() {
        let joins = token.kind == TokenKind::Dot
            && out.last().is_some_and(|t| t.kind == TokenKind::Ident)
            && rest.peek().is_some_and(|t| t.kind == TokenKind::Ident);
        if joins {
            if let (Some(mut previous), Some(next)) = (out.pop(), rest.next()) {
                previous.value.push('.');
                previous.value.push_str(&next.value);
                out.push(previous);
                continue;
            }
        }
        out.push(token);
    }
    out
}

/// Tokens consumed front to back, like the reference's `Array.shift()`.
struct Stream {
    tokens: Vec<Token>,
    next: usize,
}

impl Stream {
    fn shift(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        if token.is_some() {
            self.next += 1;
        }
        token
    }

    fn first(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }
}

/// What an identifier's first segment selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FieldKind {
    Type,
    Event,
    Name,
    UserId,
    Properties,
    Traits,
    Context,
    /// A name every JavaScript object has (`constructor`, `toString`, ...):
    /// the reference consumes an operator and a value but builds nothing.
    Inherited,
}

fn field_kind(first_segment: &str) -> Option<FieldKind> {
    match first_segment {
        "type" => Some(FieldKind::Type),
        "event" => Some(FieldKind::Event),
        "name" => Some(FieldKind::Name),
        "userId" => Some(FieldKind::UserId),
        "properties" => Some(FieldKind::Properties),
        "traits" => Some(FieldKind::Traits),
        "context" => Some(FieldKind::Context),
        other if js::is_object_proto_name(other) => Some(FieldKind::Inherited),
        _ => None,
    }
}

fn is_function(token: &Token) -> bool {
    token.kind == TokenKind::Ident && (token.value == "contains" || token.value == "match")
}

/// A token's value as the reference reads it: a string without its double
/// quotes (single quotes stay), a number, a boolean, or the token's text.
enum TokenValue {
    Text(String),
    Number(f64),
    Bool(bool),
}

fn token_value(token: &Token) -> TokenValue {
    match token.kind {
        TokenKind::Str => {
            let text = token.value.as_str();
            let text = text.strip_prefix('"').unwrap_or(text);
            let text = text.strip_suffix('"').unwrap_or(text);
            TokenValue::Text(text.to_string())
        }
        TokenKind::Number => TokenValue::Number(js::string_to_number(&token.value)),
        TokenKind::Ident if token.value == "true" => TokenValue::Bool(true),
        TokenKind::Ident if token.value == "false" => TokenValue::Bool(false),
        _ => TokenValue::Text(token.value.clone()),
    }
}

/// `String(value)` of a token's value.
fn token_text(token: &Token) -> String {
    match token_value(token) {
        TokenValue::Text(text) => text,
        TokenValue::Number(n) => js::number_to_string(n),
        TokenValue::Bool(b) => b.to_string(),
    }
}

/// The expected value keeping the token value's type.
fn typed_expected(token: &Token) -> Expected {
    match token_value(token) {
        TokenValue::Text(text) => Expected::from_text(text),
        TokenValue::Number(n) => Expected::from_number(n),
        TokenValue::Bool(b) => Expected::from_bool(b),
    }
}

struct Parser {
    /// Char length of the source: where missing tokens are reported.
    end: usize,
    warnings: Vec<String>,
    ignored: Vec<String>,
}

impl Parser {
    fn error(&self, message: impl Into<String>, position: usize) -> FqlError {
        FqlError {
            message: message.into(),
            position,
        }
    }

    /// Parses one group (the whole trigger, or the inside of parentheses).
    /// Returns `Node::Hole` when the group yields nothing.
    fn group(&mut self, tokens: Vec<Token>, depth: usize) -> Result<Node, FqlError> {
        let mut stream = Stream { tokens, next: 0 };
        let mut nodes: Vec<Node> = Vec::new();
        let mut op = GroupOp::And;
        let (mut saw_and, mut saw_or) = (false, false);

        while let Some(token) = stream.shift() {
            match token.kind {
                TokenKind::Eos => break,
                TokenKind::Ident => {
                    let first_segment = token.value.split('.').next().unwrap_or_default();
                    if let Some(kind) = field_kind(first_segment) {
                        self.condition(kind, &token, &mut stream, &mut nodes)?;
                    } else if is_function(&token) {
                        self.function(&token, &mut stream, &mut nodes, false)?;
                    } else if token.value == "not" {
                        self.warnings.push(
                            "`not` is ignored: the condition after it is not negated \
                             (use `!=` or `!contains(...)`/`!match(...)`)"
                                .to_string(),
                        );
                    } else {
                        self.warnings.push(format!(
                            "`{}` is not a field a condition can use (type, event, name, userId, \
                             properties.*, traits.*, context.*): it is ignored",
                            token.value
                        ));
                    }
                }
                TokenKind::Operator if token.value == "!" => match stream.first() {
                    None => return Err(self.error("`!` is not followed by anything", token.pos)),
                    Some(next) if is_function(next) => {
                        if let Some(function) = stream.shift() {
                            self.function(&function, &mut stream, &mut nodes, true)?;
                        }
                    }
                    Some(_) => self
                        .warnings
                        .push("`!` negates only contains() and match(); elsewhere it is ignored".to_string()),
                },
                TokenKind::ParenLeft => {
                    let node = self.parenthesized(&token, &mut stream, depth)?;
                    nodes.push(node);
                }
                TokenKind::Conditional => {
                    if token.value == "or" {
                        op = GroupOp::Or;
                        saw_or = true;
                    } else {
                        op = GroupOp::And;
                        saw_and = true;
                    }
                }
                _ => self.ignored.push(format!("`{}`", token.value)),
            }
        }

        if saw_and && saw_or && nodes.len() > 1 {
            let last = if op == GroupOp::Or { "or" } else { "and" };
            self.warnings.push(format!(
                "`and` and `or` are mixed without parentheses: the last one (`{last}`) \
                 combines all conditions of the group"
            ));
        }
        if nodes.len() > 1 {
            Ok(Node::Group { op, children: nodes })
        } else {
            Ok(nodes.pop().unwrap_or(Node::Hole))
        }
    }

    fn parenthesized(&mut self, open: &Token, stream: &mut Stream, depth: usize) -> Result<Node, FqlError> {
        if depth > 0 {
            // The enclosing group ended at the first `)`, so this one can
            // never be closed: the reference fails the same way.
            return Err(self.error("nested parentheses are not supported", open.pos));
        }
        let mut inner: Vec<Token> = Vec::new();
        let close = loop {
            match stream.shift() {
                None => return Err(self.error("missing closing parenthesis", open.pos)),
                Some(token) if token.kind == TokenKind::ParenRight => break token,
                Some(token) => inner.push(token),
            }
        };
        let has_call = inner.iter().any(|t| t.kind == TokenKind::ParenLeft);
        inner.push(Token::eos(close.pos));
        let node = self.group(inner, depth + 1)?;
        if has_call {
            self.warnings
                .push("a function call inside parentheses ends the group at its own `)`".to_string());
        }
        if node == Node::Hole {
            self.warnings.push(
                "parentheses without a condition: the reference fails on events that reach \
                 them, so those events never match"
                    .to_string(),
            );
        }
        Ok(node)
    }

    fn condition(
        &mut self,
        kind: FieldKind,
        field_token: &Token,
        stream: &mut Stream,
        nodes: &mut Vec<Node>,
    ) -> Result<(), FqlError> {
        let Some(op_token) = stream.shift() else {
            return Err(self.error("Operator token is missing", self.end));
        };
        let Some(value_token) = stream.shift() else {
            return Err(self.error("Value token is missing", self.end));
        };
        let o = op_token.value.as_str();
        let v = value_token.value.as_str();
        let is_true = o == "=" && v == "true";
        let is_false = o == "=" && v == "false";
        let exists = o == "!=" && v == "null";
        let not_exists = o == "=" && v == "null";
        let number_eq = o == "=" && value_token.kind == TokenKind::Number;
        let number_ne = o == "!=" && value_token.kind == TokenKind::Number;
        let named_op = Op::from_text(o);
        let text_expected = || Expected::from_text(token_text(&value_token));

        let (field, op, expected) = match kind {
            FieldKind::Inherited => {
                self.warnings.push(format!(
                    "`{}` is not a field a condition can use: it and the next two tokens are ignored",
                    field_token.value
                ));
                return Ok(());
            }
            FieldKind::Type => (Field::Type, named_op, text_expected()),
            FieldKind::Event => (Field::Event, named_op, text_expected()),
            FieldKind::Name if exists => (Field::Name, Op::Exists, Expected::none()),
            FieldKind::Name if not_exists => (Field::Name, Op::NotExists, Expected::none()),
            FieldKind::Name => (Field::Name, named_op, text_expected()),
            FieldKind::UserId => {
                let op = if exists {
                    Op::Exists
                } else if not_exists {
                    Op::NotExists
                } else if is_true {
                    Op::IsTrue
                } else if is_false {
                    Op::IsFalse
                } else {
                    named_op
                };
                (Field::UserId, op, text_expected())
            }
            FieldKind::Properties | FieldKind::Traits | FieldKind::Context => {
                let prefix = match kind {
                    FieldKind::Properties => "properties",
                    FieldKind::Traits => "traits",
                    _ => "context",
                };
                let name = path_name(&field_token.value, prefix);
                if name == prefix {
                    self.warnings
                        .push(format!("`{prefix}` without a path reads `{prefix}.{prefix}`"));
                }
                let path = Path::parse(name);
                let field = match kind {
                    FieldKind::Properties => Field::Properties(path),
                    FieldKind::Traits => Field::Traits(path),
                    _ => Field::Context(path),
                };
                let (op, expected) = if exists {
                    (Op::Exists, Expected::none())
                } else if not_exists {
                    (Op::NotExists, Expected::none())
                } else if is_true {
                    (Op::IsTrue, Expected::none())
                } else if is_false {
                    (Op::IsFalse, Expected::none())
                } else if number_eq {
                    (Op::NumberEq, typed_expected(&value_token))
                } else if number_ne {
                    (Op::NumberNe, typed_expected(&value_token))
                } else {
                    (named_op, typed_expected(&value_token))
                };
                (field, op, expected)
            }
        };
        self.condition_warnings(field_token, &op_token, &value_token, &field, op);
        nodes.push(Node::Condition(Condition { field, op, expected }));
        Ok(())
    }

    fn condition_warnings(
        &mut self,
        field_token: &Token,
        op_token: &Token,
        value_token: &Token,
        field: &Field,
        op: Op,
    ) {
        let (f, o, v) = (&field_token.value, &op_token.value, &value_token.value);
        let top_level = matches!(field, Field::Type | Field::Event | Field::Name | Field::UserId);
        match value_token.kind {
            TokenKind::Eos => self.warnings.push(format!(
                "`{f} {o}` has no value: the reference compares with the text \"eos\""
            )),
            TokenKind::Operator if o == "=" && v == "=" => self.warnings.push(format!(
                "`==` is not an operator: the second `=` becomes the value, so `{f}` is compared \
                 with the text \"=\""
            )),
            TokenKind::Operator => self.warnings.push(format!(
                "`{o}` is followed by the operator `{v}`, which becomes the value (`<=5` splits \
                 into `<`, `=`, `5`): `{f}` is compared with the text \"{v}\""
            )),
            TokenKind::Str if v.starts_with('\'') => self.warnings.push(format!(
                "single-quoted strings keep their quotes: `{f}` is compared with {v} including the quotes"
            )),
            TokenKind::Str if !top_level && matches!(op, Op::Eq | Op::Ne) => {
                let text = token_text(value_token);
                if !text.trim().is_empty() && !js::string_to_number(&text).is_nan() {
                    self.warnings.push(format!(
                        "`{f} {o} {v}` compares text only: the number {text} does not equal it"
                    ));
                }
            }
            TokenKind::Number if top_level && matches!(op, Op::Eq | Op::Ne) => {
                self.warnings.push(format!(
                    "`{f} {o} {v}` compares with the text \"{}\": a numeric value never equals it",
                    token_text(value_token)
                ));
            }
            TokenKind::Null if top_level && matches!(op, Op::Eq | Op::Ne) => {
                self.warnings.push(format!(
                    "`{f} {o} null` compares with the text \"null\" (null checks work only on \
                     name, userId, properties.*, traits.* and context.*)"
                ));
            }
            TokenKind::Ident if v == "true" || v == "false" => {
                let boolean_test = o == "=" && (!top_level || field == &Field::UserId);
                if !boolean_test {
                    self.warnings
                        .push(format!("`{f} {o} {v}` compares with the text \"{v}\", not the boolean"));
                }
            }
            TokenKind::Ident if v != "null" => self
                .warnings
                .push(format!("bare word `{v}` is compared as the text \"{v}\"")),
            _ => {}
        }
        if op == Op::Unsupported {
            self.warnings
                .push(format!("`{o}` is not a comparison operator: `{f}` never matches"));
        } else if op_token.kind == TokenKind::Ident {
            self.warnings.push(format!(
                "`{o}` used as an infix operator works only by accident in the reference"
            ));
        }
    }

    fn function(
        &mut self,
        name_token: &Token,
        stream: &mut Stream,
        nodes: &mut Vec<Node>,
        negate: bool,
    ) -> Result<(), FqlError> {
        let name = name_token.value.as_str();
        let open = stream.shift();
        let Some(field_token) = stream.shift() else {
            return Err(self.error(format!("{name}() is missing a 1st argument"), self.end));
        };
        let comma = stream.shift();
        let Some(value_token) = stream.shift() else {
            return Err(self.error(format!("{name}() is missing a 2nd argument"), self.end));
        };
        let close = stream.shift();
        // Inside parentheses the group ends at the call's own `)`, so the end
        // token stands in for it (that case has its own warning).
        let shaped = open.is_some_and(|t| t.kind == TokenKind::ParenLeft)
            && comma.is_some_and(|t| t.kind == TokenKind::Comma)
            && close.is_some_and(|t| matches!(t.kind, TokenKind::ParenRight | TokenKind::Eos));
        if !shaped {
            self.warnings.push(format!(
                "{name}() arguments are read by position: `(`, field, `,`, value, `)`"
            ));
        }
        if value_token.kind == TokenKind::Str && value_token.value.starts_with('\'') {
            self.warnings.push(format!(
                "single-quoted strings keep their quotes: {name}() looks for {} including the quotes",
                value_token.value
            ));
        }

        let text = token_text(&value_token);
        let (op, expected) = if name == "contains" {
            let op = if negate { Op::NotContains } else { Op::Contains };
            (op, Expected::from_text(text))
        } else if value_token.value.ends_with("*\"") {
            let op = if negate { Op::NotStartsWith } else { Op::StartsWith };
            (op, Expected::from_text(js::drop_last_unit(&text)))
        } else {
            let op = if negate { Op::NotEndsWith } else { Op::EndsWith };
            let (lead, rest) = js::drop_first_unit(&text);
            if !text.starts_with('*') {
                self.warnings.push(format!(
                    "match() with {} (no `*` at either end) tests whether the value ends with \"{rest}\"",
                    value_token.value
                ));
            }
            let mut expected = Expected::from_text(rest);
            expected.lead = lead;
            (op, expected)
        };

        let target = field_token.value.as_str();
        let field = match target {
            "event" => Some(Field::Event),
            "name" => Some(Field::Name),
            "userId" => Some(Field::UserId),
            _ if target.starts_with("properties") => {
                Some(Field::Properties(Path::parse(path_name(target, "properties"))))
            }
            _ if target.starts_with("traits") => Some(Field::Traits(Path::parse(path_name(target, "traits")))),
            _ if target.starts_with("context") => Some(Field::Context(Path::parse(path_name(target, "context")))),
            _ => None,
        };
        match field {
            Some(field) => nodes.push(Node::Condition(Condition { field, op, expected })),
            None => self.warnings.push(format!(
                "{name}() on `{target}` forms no condition (it accepts event, name, userId, \
                 properties.*, traits.* and context.*)"
            )),
        }
        Ok(())
    }
}

/// The path below `prefix`: the reference removes `prefix.` when present and
/// otherwise keeps the whole identifier.
fn path_name<'a>(identifier: &'a str, prefix: &str) -> &'a str {
    identifier
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('.'))
        .unwrap_or(identifier)
}
