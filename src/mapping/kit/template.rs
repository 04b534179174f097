//! `@template`: `{{path}}` and `{{{path}}}` placeholders.
//!
//! Like the reference, two passes run one after the other: first every
//! `{{{...}}}`, then every `{{...}}` (so text inserted by the first pass is scanned
//! by the second). The inside of a placeholder is one or more characters other
//! than `}`, trimmed, and read with the plain path rules (no `$.` handling).
//! Missing and `null` give `""`; other values are converted like JavaScript's
//! `String()` (objects `[object Object]`, arrays joined with `,`). No HTML escaping.

use super::path::get;
use super::value::{js_string, Data};
use crate::mapping::number::js_trim;

/// Renders a template against `data`.
pub(crate) fn render(template: &str, data: Data<'_>) -> String {
    let first = replace_placeholders(template, "{{{", "}}}", data);
    replace_placeholders(&first, "{{", "}}", data)
}

fn replace_placeholders(text: &str, open: &str, close: &str, data: Data<'_>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Byte offset of the first `}` at or after the last search start (or the text's
    // length when there is none); keeps the scan linear even for long runs of `{`.
    let mut next_close: Option<usize> = None;
    while i < text.len() {
        let rest = text.get(i..).unwrap_or("");
        if rest.starts_with(open) {
            let inner_start = i + open.len();
            let inner_end = match next_close {
                Some(p) if p >= inner_start => p,
                _ => {
                    let found = text
                        .get(inner_start..)
                        .and_then(|s| s.find('}'))
                        .map_or(text.len(), |p| p + inner_start);
                    next_close = Some(found);
                    found
                }
            };
            let closes = text.get(inner_end..).is_some_and(|s| s.starts_with(close));
            if inner_end > inner_start && closes {
                let inner = text.get(inner_start..inner_end).unwrap_or("");
                let value = get(data, js_trim(inner));
                if !value.is_nullish() {
                    js_string(&value, &mut out);
                }
                i = inner_end + close.len();
                continue;
            }
        }
        match rest.chars().next() {
            Some(c) => {
                out.push(c);
                i += c.len_utf8();
            }
            None => break,
        }
    }
    out
}
