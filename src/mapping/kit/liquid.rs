//! `@liquid`: Liquid templates rendered with the `liquid` crate, held to the
//! subset where it behaves like the reference's liquidjs.
//!
//! The reference limits templates to 1000 characters, disables the tags `case`,
//! `for`, `include`, `layout`, `render`, `tablerow` and a list of filters, and reads
//! missing variables as `undefined` (empty output, falsy). Here:
//!
//! - the template is scanned before parsing: disabled tags and filters fail with the
//!   reference's messages (`tag "for" is disabled`), and tags or filters whose
//!   behaviour in the crate differs from liquidjs fail with `... is not supported`;
//! - the event is exposed through [`Node`], a view with JavaScript semantics:
//!   missing members are an `undefined` that renders as `""`, is falsy and can be
//!   read further; numbers print like JavaScript; arrays print their items joined
//!   with nothing, objects as `[object Object]`;
//! - rendering is bounded in size and time ([`bounded`]): every value it
//!   produces (the output, a `capture`, a filter's result) is at most
//!   100,000 bytes and a render takes at most 500 ms, checked before the
//!   allocation, so no template can make the process run out of memory.

mod bounded;

use std::fmt;
use std::sync::OnceLock;
use std::time::Instant;

use liquid::model::{ArrayView, DisplayCow, KStringCow, ScalarCow, State, Value as LValue};
use liquid::{ObjectView, ValueView};
use serde_json::Value;

use super::value::{Data, Resolved};
use crate::mapping::number::{js_number_to_string, json_number_to_f64};

/// Longest template accepted, in UTF-16 code units.
const MAX_TEMPLATE_LENGTH: usize = 1000;

const DISABLED_TAGS: &[&str] = &["case", "for", "include", "layout", "render", "tablerow"];
const SUPPORTED_TAGS: &[&str] = &[
    "if",
    "elsif",
    "else",
    "endif",
    "unless",
    "endunless",
    "assign",
    "capture",
    "endcapture",
    "comment",
    "endcomment",
    "raw",
    "endraw",
];
const DISABLED_FILTERS: &[&str] = &[
    "array_to_sentence_string",
    "concat",
    "find",
    "find_exp",
    "find_index",
    "find_index_exp",
    "group_by",
    "group_by_exp",
    "has",
    "has_exp",
    "map",
    "newline_to_br",
    "reject",
    "reject_exp",
    "reverse",
    "sort",
    "sort_natural",
    "uniq",
    "where_exp",
    "type",
];
const SUPPORTED_FILTERS: &[&str] = &[
    "upcase",
    "downcase",
    "append",
    "prepend",
    "strip",
    "lstrip",
    "rstrip",
    "replace",
    "replace_first",
    "remove",
    "remove_first",
    "default",
    "first",
    "last",
    "join",
];

/// Renders a `@liquid` template (the raw option, not resolved) against `data`.
pub(crate) fn evaluate(template: &Value, data: Data<'_>) -> Result<String, String> {
    let Value::String(template) = template else {
        return Err("liquid template value must be a string".to_owned());
    };
    if template.is_empty() {
        return Ok(String::new());
    }
    if super::value::utf16_len(template) > MAX_TEMPLATE_LENGTH {
        return Err(format!(
            "liquid template values are limited to {MAX_TEMPLATE_LENGTH} characters"
        ));
    }
    prescan(template)?;
    let parsed = parse(template)?;
    let globals = Node::from_data(data);
    let mut out = bounded::LimitedWriter::new(bounded::MAX_VALUE_BYTES, Instant::now());
    let rendered = parsed.render_to(&mut out, &globals);
    if let Some(bytes) = out.refused {
        return Err(format!("liquid: {}", bounded::too_large("the rendered value", bytes)));
    }
    if out.late {
        return Err(format!(
            "liquid: rendering took longer than {} ms",
            bounded::MAX_RENDER_TIME.as_millis()
        ));
    }
    rendered.map_err(|e| liquid_message(&e))?;
    String::from_utf8(out.buf).map_err(|_| "liquid: rendering produced invalid UTF-8".to_owned())
}

/// Checks a template as rendering would, without an event: its length, the
/// supported subset of tags and filters, and that it parses. A template that
/// fails here fails for every event.
pub(crate) fn check(template: &str) -> Result<(), String> {
    if template.is_empty() {
        return Ok(());
    }
    if super::value::utf16_len(template) > MAX_TEMPLATE_LENGTH {
        return Err(format!(
            "liquid template values are limited to {MAX_TEMPLATE_LENGTH} characters"
        ));
    }
    prescan(template)?;
    parse(template).map(|_| ())
}

/// Parses a template that passed [`prescan`]. The crate's parser has internal
/// assertions that some malformed templates reach (a panic instead of an
/// error); such a template is reported as invalid, never a crash.
fn parse(template: &str) -> Result<liquid::Template, String> {
    let parser = parser()?;
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parser.parse(template))) {
        Ok(parsed) => parsed.map_err(|e| liquid_message(&e)),
        Err(_) => Err("liquid: the template could not be parsed".to_owned()),
    }
}

fn parser() -> Result<&'static liquid::Parser, String> {
    static PARSER: OnceLock<Option<liquid::Parser>> = OnceLock::new();
    PARSER
        .get_or_init(|| bounded::parser_builder().build().ok())
        .as_ref()
        .ok_or_else(|| "liquid engine could not be initialised".to_owned())
}

fn liquid_message(e: &liquid::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("liquid error");
    format!("liquid: {}", first.trim_start_matches("liquid: "))
}

/// Checks tags and filters against the supported subset before the crate parses
/// the template (which also keeps the crate away from inputs it cannot handle,
/// such as integer literals beyond `i64`).
fn prescan(template: &str) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = rest.get(start + 1..).unwrap_or("");
        let (is_tag, close) = if after.starts_with('%') {
            (true, "%}")
        } else if after.starts_with('{') {
            (false, "}}")
        } else {
            rest = after;
            continue;
        };
        let body_start = after.get(1..).unwrap_or("");
        let Some((body, remainder)) = split_markup(body_start, close) else {
            let (what, open) = if is_tag { ("tag", "{%") } else { ("output", "{{") };
            return Err(format!("liquid: {what} \"{open}\" is not closed by \"{close}\""));
        };
        if is_tag {
            let name = first_identifier(body.trim_start_matches('-'));
            check_tag(name)?;
            if name == "raw" || name == "comment" {
                rest = skip_block(remainder, name)?;
                check_markup(body)?;
                continue;
            }
        }
        check_markup(body)?;
        rest = remainder;
    }
    Ok(())
}

/// Splits markup at its closing delimiter, ignoring delimiters inside quotes;
/// None when it is never closed.
fn split_markup<'t>(text: &'t str, close: &str) -> Option<(&'t str, &'t str)> {
    let mut quote: Option<char> = None;
    for (i, c) in text.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '"' || c == '\'' => quote = Some(c),
            None if text.get(i..).is_some_and(|s| s.starts_with(close)) => {
                return Some((text.get(..i).unwrap_or(""), text.get(i + close.len()..).unwrap_or("")));
            }
            None => {}
        }
    }
    None
}

fn first_identifier(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_' || *c == '-'))
        .map_or(text.len(), |(i, _)| i);
    text.get(..end).unwrap_or("")
}

fn check_tag(name: &str) -> Result<(), String> {
    if DISABLED_TAGS.contains(&name) {
        return Err(format!("tag \"{name}\" is disabled"));
    }
    if !SUPPORTED_TAGS.contains(&name) {
        return Err(format!("liquid tag \"{name}\" is not supported"));
    }
    Ok(())
}

/// Skips the body of `{% raw %}`/`{% comment %}` up to its end tag; a block
/// without one is refused, as LiquidJS refuses it.
fn skip_block<'t>(text: &'t str, name: &str) -> Result<&'t str, String> {
    let end_name = format!("end{name}");
    let mut rest = text;
    while let Some(start) = rest.find("{%") {
        let after = rest.get(start + 2..).unwrap_or("");
        if let Some((body, remainder)) = split_markup(after, "%}") {
            if first_identifier(body.trim_start_matches('-')) == end_name {
                return Ok(remainder);
            }
        }
        rest = after;
    }
    Err(format!(
        "liquid: {{% {name} %}} is not closed: {{% {end_name} %}} expected"
    ))
}

/// Checks the filters used in one markup body and its number literals.
fn check_markup(body: &str) -> Result<(), String> {
    let mut quote: Option<char> = None;
    let mut digits = 0usize;
    for (i, c) in body.char_indices() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        if c.is_ascii_digit() {
            digits += 1;
            if digits > 18 {
                return Err("liquid integer literals beyond 18 digits are not supported".to_owned());
            }
            continue;
        }
        digits = 0;
        match c {
            '"' | '\'' => quote = Some(c),
            '|' => {
                let name = first_identifier(body.get(i + 1..).unwrap_or(""));
                if DISABLED_FILTERS.contains(&name) {
                    return Err(format!("filter \"{name}\" is disabled"));
                }
                if !SUPPORTED_FILTERS.contains(&name) {
                    return Err(format!("liquid filter \"{name}\" is not supported"));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The event as Liquid sees it, with JavaScript semantics.
#[derive(Debug)]
enum Node {
    Undefined,
    Null,
    Bool(bool),
    Number(f64),
    Str(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

static UNDEFINED: Node = Node::Undefined;

impl Node {
    fn from_data(data: Data<'_>) -> Node {
        match data {
            Data::Json(v) => Node::from_json(v),
            Data::Built(r) => Node::from_resolved(r),
        }
    }

    fn from_json(v: &Value) -> Node {
        match v {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(*b),
            Value::Number(n) => Node::Number(json_number_to_f64(n)),
            Value::String(s) => Node::Str(s.clone()),
            Value::Array(items) => Node::Array(items.iter().map(Node::from_json).collect()),
            Value::Object(map) => Node::Object(map.iter().map(|(k, v)| (k.clone(), Node::from_json(v))).collect()),
        }
    }

    fn from_resolved(r: &Resolved<'_>) -> Node {
        match r {
            Resolved::Undef => Node::Undefined,
            Resolved::Ref(v) => Node::from_json(v),
            Resolved::Val(v) => Node::from_json(v),
            Resolved::Arr(items) => Node::Array(items.iter().map(Node::from_resolved).collect()),
            Resolved::Obj(entries) => Node::Object(
                entries
                    .iter()
                    .filter(|(_, v)| !v.is_undef())
                    .map(|(k, v)| (k.clone(), Node::from_resolved(v)))
                    .collect(),
            ),
        }
    }

    /// liquidjs `stringify`.
    fn text(&self) -> String {
        match self {
            Node::Undefined | Node::Null => String::new(),
            Node::Bool(b) => b.to_string(),
            Node::Number(n) => js_number_to_string(*n),
            Node::Str(s) => s.clone(),
            Node::Array(items) => items.iter().map(Node::text).collect(),
            Node::Object(_) => "[object Object]".to_owned(),
        }
    }

    fn scalar_number(n: f64) -> ScalarCow<'static> {
        if n.fract() == 0.0 && n.abs() <= 9_007_199_254_740_992.0 {
            ScalarCow::new(n as i64)
        } else {
            ScalarCow::new(n)
        }
    }
}

struct Text(String);

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl ValueView for Node {
    fn as_debug(&self) -> &dyn fmt::Debug {
        self
    }

    fn render(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(Text(self.text())))
    }

    fn source(&self) -> DisplayCow<'_> {
        DisplayCow::Owned(Box::new(Text(self.text())))
    }

    fn type_name(&self) -> &'static str {
        match self {
            Node::Undefined | Node::Null => "nil",
            Node::Bool(_) => "boolean",
            Node::Number(_) => "number",
            Node::Str(_) => "string",
            Node::Array(_) => "array",
            Node::Object(_) => "object",
        }
    }

    fn query_state(&self, state: State) -> bool {
        match state {
            State::Truthy => !matches!(self, Node::Undefined | Node::Null | Node::Bool(false)),
            State::DefaultValue => match self {
                Node::Undefined | Node::Null | Node::Bool(false) => true,
                Node::Str(s) => s.is_empty(),
                Node::Array(items) => items.is_empty(),
                _ => false,
            },
            State::Empty => match self {
                Node::Str(s) => s.is_empty(),
                Node::Array(items) => items.is_empty(),
                Node::Object(entries) => entries.is_empty(),
                _ => false,
            },
            State::Blank => match self {
                Node::Undefined | Node::Null | Node::Bool(false) => true,
                Node::Str(s) => s.trim().is_empty(),
                Node::Array(items) => items.is_empty(),
                Node::Object(entries) => entries.is_empty(),
                _ => false,
            },
        }
    }

    fn to_kstr(&self) -> KStringCow<'_> {
        match self {
            Node::Str(s) => KStringCow::from_ref(s),
            other => KStringCow::from_string(other.text()),
        }
    }

    fn to_value(&self) -> LValue {
        match self {
            Node::Undefined | Node::Null => LValue::Nil,
            Node::Bool(b) => LValue::scalar(*b),
            Node::Number(n) => LValue::Scalar(Node::scalar_number(*n).into_owned()),
            Node::Str(s) => LValue::scalar(s.clone()),
            Node::Array(items) => LValue::Array(items.iter().map(ValueView::to_value).collect()),
            // liquid's own objects are unordered maps: rendering one would
            // print its keys in a random order. JavaScript (and so the
            // reference) turns an object into "[object Object]" wherever a
            // filter stringifies it, so that is the value filters receive.
            Node::Object(_) => LValue::scalar("[object Object]"),
        }
    }

    fn as_scalar(&self) -> Option<ScalarCow<'_>> {
        match self {
            Node::Bool(b) => Some(ScalarCow::new(*b)),
            Node::Number(n) => Some(Node::scalar_number(*n)),
            Node::Str(s) => Some(ScalarCow::new(s.as_str())),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<&dyn ArrayView> {
        match self {
            Node::Array(_) => Some(self),
            _ => None,
        }
    }

    fn as_object(&self) -> Option<&dyn ObjectView> {
        match self {
            // `undefined` reads as an empty object so that `a.missing.deeper` stays
            // `undefined` instead of failing.
            Node::Object(_) | Node::Undefined => Some(self),
            _ => None,
        }
    }

    fn is_nil(&self) -> bool {
        matches!(self, Node::Undefined | Node::Null)
    }
}

impl ArrayView for Node {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        match self {
            Node::Array(items) => i64::try_from(items.len()).unwrap_or(i64::MAX),
            _ => 0,
        }
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Node::Array(items) => Box::new(items.iter().map(|n| n as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn contains_key(&self, _index: i64) -> bool {
        matches!(self, Node::Array(_))
    }

    fn get(&self, index: i64) -> Option<&dyn ValueView> {
        let Node::Array(items) = self else {
            return Some(&UNDEFINED);
        };
        let len = i64::try_from(items.len()).unwrap_or(i64::MAX);
        let index = if index < 0 { index.saturating_add(len) } else { index };
        let found = usize::try_from(index).ok().and_then(|i| items.as_slice().get(i));
        Some(found.map_or(&UNDEFINED as &dyn ValueView, |n| n as &dyn ValueView))
    }
}

impl ObjectView for Node {
    fn as_value(&self) -> &dyn ValueView {
        self
    }

    fn size(&self) -> i64 {
        match self {
            Node::Object(entries) => i64::try_from(entries.len()).unwrap_or(i64::MAX),
            _ => 0,
        }
    }

    fn keys<'k>(&'k self) -> Box<dyn Iterator<Item = KStringCow<'k>> + 'k> {
        match self {
            Node::Object(entries) => Box::new(entries.iter().map(|(k, _)| KStringCow::from_ref(k))),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn values<'k>(&'k self) -> Box<dyn Iterator<Item = &'k dyn ValueView> + 'k> {
        match self {
            Node::Object(entries) => Box::new(entries.iter().map(|(_, v)| v as &dyn ValueView)),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn iter<'k>(&'k self) -> Box<dyn Iterator<Item = (KStringCow<'k>, &'k dyn ValueView)> + 'k> {
        match self {
            Node::Object(entries) => Box::new(
                entries
                    .iter()
                    .map(|(k, v)| (KStringCow::from_ref(k), v as &dyn ValueView)),
            ),
            _ => Box::new(std::iter::empty()),
        }
    }

    fn contains_key(&self, _index: &str) -> bool {
        true
    }

    fn get<'s>(&'s self, index: &str) -> Option<&'s dyn ValueView> {
        if let Node::Object(entries) = self {
            if let Some((_, v)) = entries.iter().find(|(k, _)| k == index) {
                return Some(v);
            }
            if index == "size" {
                // Let the engine answer `size` for objects without such a member.
                return None;
            }
        }
        Some(&UNDEFINED)
    }
}

#[cfg(test)]
mod tests;
