//! Liquid rendering held to fixed bounds, enforced *before* anything is
//! allocated: a template that passes `check` must not be able to make the
//! process allocate without limit (an allocation failure aborts; it cannot be
//! caught).
//!
//! The limits (Segment's own for `@liquid`):
//! - templates of at most 1,000 characters (checked before parsing);
//! - every value rendering produces, at most [`MAX_VALUE_BYTES`] bytes: the
//!   rendered output, each `capture`, and each filter's result (so each
//!   `assign`);
//! - rendering takes at most [`MAX_RENDER_TIME`], measured from the first
//!   filter or `capture` of the render (before that only literal text and
//!   variables are written).
//!
//! A render that passes a limit fails with an error naming it, which the
//! caller reports as the event's error (a dead letter in spool mode), never a
//! crash.
//!
//! # Where output can grow, and how each path is bounded
//! The parser knows only the supported tags and filters ([`parser_builder`]):
//! whatever the scan before parsing might let through, no other tag or filter
//! of the crate can run. Without loops (`for`, `tablerow`, `include`,
//! `render` are unknown to it) a render runs each element of the template at most once, so the
//! work is bounded by the template's length times the cost of one element; the
//! cost of one element is bounded by bounding the values it can produce. In the
//! `liquid` crate (0.26) output grows only through:
//! - **the writer** a template renders into: text, `raw` and `{{ ... }}` write
//!   to it. The render writes into a [`LimitedWriter`], which refuses a write
//!   that would pass the limit before copying it.
//! - **`capture`**: the crate's block renders into an unbounded `Vec`. It is
//!   replaced by [`BoundedCapture`], which renders into a `LimitedWriter`.
//! - **filters**, whose results `assign` stores and `{{ }}` writes. Of the
//!   supported filters, `append`, `prepend`, `replace`, `replace_first`,
//!   `join`, `upcase` and `downcase` can return more than they were given (by
//!   up to the product of two values, for `replace` with an empty search, or
//!   `join` of a long array with a long separator). Every supported filter is
//!   registered wrapped in [`Bounded`], which computes the exact length of
//!   the result of those seven from their input and arguments (lengths and a
//!   count of matches, no allocation beyond the values' own text) and refuses
//!   it before the crate's filter builds it. The others (`strip`, `lstrip`,
//!   `rstrip`, `remove`, `remove_first`, `first`, `last`, `default`) return
//!   at most their input or an argument, values that already exist; the
//!   wrapper still checks every result's length after the call.
//! - `assign` stores a filter chain's result (bounded above) and `if`,
//!   `unless`, `comment` produce nothing of their own.
//!
//! The event itself is bounded by ingest's limits. So a render holds at most
//! the event, a few values per `assign`/`capture` tag (at most 1,000 / 12 of
//! them) of at most [`MAX_VALUE_BYTES`] each, and its output.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use liquid_core::error::ResultLiquidExt as _;
use liquid_core::model::KString;
use liquid_core::parser::FilterArguments;
use liquid_core::{
    BlockReflection, Error, Expression, Filter, FilterReflection, Language, ParseBlock, ParseFilter, Renderable,
    Result, Runtime, TagBlock, TagTokenIter, Template, Value, ValueView,
};

/// Largest value a render produces: the output, a `capture`, a filter result.
pub(crate) const MAX_VALUE_BYTES: usize = crate::mapping::kit::MAX_VALUE_BYTES;

/// Longest a render may take.
pub(crate) const MAX_RENDER_TIME: Duration = Duration::from_millis(500);

/// The message of a value over [`MAX_VALUE_BYTES`].
pub(super) fn too_large(what: &str, bytes: usize) -> String {
    format!("{what} would be {bytes} bytes, over the limit of {MAX_VALUE_BYTES} bytes per value")
}

fn too_slow() -> Error {
    Error::with_msg(format!("rendering took longer than {} ms", MAX_RENDER_TIME.as_millis()))
}

/// When the render's first filter or `capture` ran (a register of the
/// runtime, created on first use).
struct Clock(Instant);

impl Default for Clock {
    fn default() -> Self {
        Clock(Instant::now())
    }
}

fn check_time(runtime: &dyn Runtime) -> Result<()> {
    // The borrow ends with the statement: rendering takes the registers too.
    let elapsed = runtime.registers().get_mut::<Clock>().0.elapsed();
    if elapsed > MAX_RENDER_TIME {
        return Err(too_slow());
    }
    Ok(())
}

/// A writer that refuses to grow past `limit` bytes (before copying) and
/// remembers that it did, so the caller can name the limit rather than the
/// crate's generic "Failed to render".
pub(super) struct LimitedWriter {
    pub(super) buf: Vec<u8>,
    limit: usize,
    /// Bytes a refused write would have brought the output to.
    pub(super) refused: Option<usize>,
    started: Instant,
    pub(super) late: bool,
}

impl LimitedWriter {
    pub(super) fn new(limit: usize, started: Instant) -> LimitedWriter {
        LimitedWriter {
            buf: Vec::new(),
            limit,
            refused: None,
            started,
            late: false,
        }
    }
}

impl io::Write for LimitedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let total = self.buf.len().saturating_add(data.len());
        if total > self.limit {
            self.refused = Some(total);
            return Err(io::Error::other("output limit"));
        }
        if self.started.elapsed() > MAX_RENDER_TIME {
            self.late = true;
            return Err(io::Error::other("render time limit"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a filter's result length follows from its input and arguments.
#[derive(Clone, Copy, Debug)]
enum Growth {
    /// At most the input or an argument: checked after the call.
    None,
    Append,
    Prepend,
    Replace,
    ReplaceFirst,
    Join,
    Upcase,
    Downcase,
}

/// The supported filters, each with how its result can grow.
fn supported() -> Vec<(Box<dyn ParseFilter>, Growth)> {
    use liquid_lib::stdlib as s;
    vec![
        (Box::new(s::Upcase), Growth::Upcase),
        (Box::new(s::Downcase), Growth::Downcase),
        (Box::new(s::Append), Growth::Append),
        (Box::new(s::Prepend), Growth::Prepend),
        (Box::new(s::Strip), Growth::None),
        (Box::new(s::Lstrip), Growth::None),
        (Box::new(s::Rstrip), Growth::None),
        (Box::new(s::Replace), Growth::Replace),
        (Box::new(s::ReplaceFirst), Growth::ReplaceFirst),
        (Box::new(s::Remove), Growth::None),
        (Box::new(s::RemoveFirst), Growth::None),
        (Box::new(s::Default), Growth::None),
        (Box::new(s::First), Growth::None),
        (Box::new(s::Last), Growth::None),
        (Box::new(s::Join), Growth::Join),
    ]
}

/// A parser that knows the supported subset only: the crate's `assign`,
/// `if`, `unless`, `raw` and `comment`, our `capture`, and the supported
/// filters wrapped in [`Bounded`]. The template is scanned for anything else
/// before parsing (with the reference's messages); this closed set makes sure
/// nothing that scan might miss (`for`, `concat`, `split`, ...) can run.
pub(super) fn parser_builder() -> liquid::ParserBuilder {
    use liquid_lib::stdlib as s;
    let mut builder = liquid::ParserBuilder::new()
        .tag(s::AssignTag)
        .block(s::RawBlock)
        .block(s::IfBlock)
        .block(s::UnlessBlock)
        .block(s::CommentBlock)
        .block(BoundedCapture);
    for (inner, growth) in supported() {
        builder = builder.filter(Bounded { inner, growth });
    }
    builder
}

/// A crate filter, with its result's length checked before it runs.
#[derive(Clone)]
struct Bounded {
    inner: Box<dyn ParseFilter>,
    growth: Growth,
}

impl ParseFilter for Bounded {
    fn parse(&self, arguments: FilterArguments<'_>) -> Result<Box<dyn Filter>> {
        let positional: Vec<Expression> = arguments.positional.collect();
        let keyword: Vec<(&str, Expression)> = arguments.keyword.collect();
        let inner = self.inner.parse(FilterArguments {
            positional: Box::new(positional.clone().into_iter()),
            keyword: Box::new(keyword.into_iter()),
        })?;
        Ok(Box::new(BoundedFilter {
            name: self.inner.reflection().name().to_owned(),
            growth: self.growth,
            args: positional,
            inner,
        }))
    }

    fn reflection(&self) -> &dyn FilterReflection {
        self.inner.reflection()
    }
}

#[derive(Debug)]
struct BoundedFilter {
    name: String,
    growth: Growth,
    args: Vec<Expression>,
    inner: Box<dyn Filter>,
}

impl fmt::Display for BoundedFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.inner, f)
    }
}

impl Filter for BoundedFilter {
    fn evaluate(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Value> {
        check_time(runtime)?;
        if let Some(bytes) = self.result_len(input, runtime)? {
            if bytes > MAX_VALUE_BYTES {
                return Err(self.refuse(bytes));
            }
        }
        let out = self.inner.evaluate(input, runtime)?;
        if let Some(scalar) = out.as_scalar() {
            let bytes = scalar.to_kstr().len();
            if bytes > MAX_VALUE_BYTES {
                return Err(self.refuse(bytes));
            }
        }
        Ok(out)
    }
}

impl BoundedFilter {
    fn refuse(&self, bytes: usize) -> Error {
        Error::with_msg(too_large(&format!("the result of filter \"{}\"", self.name), bytes))
    }

    /// The length in bytes of the argument `i` as the crate's filter reads it
    /// (as a string), or `None` when it is not given.
    fn arg_len(&self, i: usize, runtime: &dyn Runtime) -> Result<Option<usize>> {
        match self.args.get(i) {
            Some(e) => Ok(Some(e.evaluate(runtime)?.to_kstr().len())),
            None => Ok(None),
        }
    }

    /// The exact length of the result, for the filters whose result can be
    /// longer than their input; `None` for the others, and when the crate's
    /// filter will refuse its input or arguments.
    fn result_len(&self, input: &dyn ValueView, runtime: &dyn Runtime) -> Result<Option<usize>> {
        let len = match self.growth {
            Growth::None => return Ok(None),
            Growth::Append | Growth::Prepend => {
                let Some(arg) = self.arg_len(0, runtime)? else {
                    return Ok(None);
                };
                input.to_kstr().len().saturating_add(arg)
            }
            Growth::ReplaceFirst => {
                let replace = self.arg_len(1, runtime)?.unwrap_or(0);
                input.to_kstr().len().saturating_add(replace)
            }
            Growth::Replace => {
                let Some(search) = self.args.first() else {
                    return Ok(None);
                };
                let search_value = search.evaluate(runtime)?;
                let search = search_value.to_kstr();
                let replace = self.arg_len(1, runtime)?.unwrap_or(0);
                let text = input.to_kstr();
                // `str::replace`'s matches: non-overlapping, and for an empty
                // pattern one at every character boundary.
                let count = text.matches(search.as_str()).count();
                text.len()
                    .saturating_sub(count.saturating_mul(search.len()))
                    .saturating_add(count.saturating_mul(replace))
            }
            Growth::Join => {
                let Some(items) = input.as_array() else {
                    return Ok(None);
                };
                let separator = self.arg_len(0, runtime)?.unwrap_or(1);
                let mut total = 0usize;
                for (i, item) in items.values().enumerate() {
                    if i > 0 {
                        total = total.saturating_add(separator);
                    }
                    total = total.saturating_add(item.to_kstr().len());
                    if total > MAX_VALUE_BYTES {
                        break;
                    }
                }
                total
            }
            Growth::Upcase => input
                .to_kstr()
                .chars()
                .map(|c| c.to_uppercase().map(char::len_utf8).sum::<usize>())
                .sum(),
            Growth::Downcase => input
                .to_kstr()
                .chars()
                .map(|c| c.to_lowercase().map(char::len_utf8).sum::<usize>())
                .sum(),
        };
        Ok(Some(len))
    }
}

/// `{% capture name %}...{% endcapture %}`, rendering into a bounded buffer
/// (the crate's renders into an unbounded one).
#[derive(Clone, Copy, Debug, Default)]
struct BoundedCapture;

impl BlockReflection for BoundedCapture {
    fn start_tag(&self) -> &str {
        "capture"
    }

    fn end_tag(&self) -> &str {
        "endcapture"
    }

    fn description(&self) -> &str {
        "Captures the rendered block into a variable, within the size limit."
    }
}

impl ParseBlock for BoundedCapture {
    fn parse(
        &self,
        mut arguments: TagTokenIter<'_>,
        mut tokens: TagBlock<'_, '_>,
        options: &Language,
    ) -> Result<Box<dyn Renderable>> {
        let id: KString = arguments
            .expect_next("Identifier expected")?
            .expect_identifier()
            .into_result()?
            .to_owned()
            .into();
        arguments.expect_nothing()?;
        let template = Template::new(
            tokens
                .parse_all(options)
                .trace_with(|| format!("{{% capture {id} %}}").into())?,
        );
        Ok(Box::new(Capture { id, template }))
    }

    fn reflection(&self) -> &dyn BlockReflection {
        self
    }
}

#[derive(Debug)]
struct Capture {
    id: KString,
    template: Template,
}

impl Renderable for Capture {
    fn render_to(&self, _writer: &mut dyn io::Write, runtime: &dyn Runtime) -> Result<()> {
        check_time(runtime)?;
        let started = runtime.registers().get_mut::<Clock>().0;
        let mut out = LimitedWriter::new(MAX_VALUE_BYTES, started);
        if let Err(e) = self.template.render_to(&mut out, runtime) {
            if let Some(bytes) = out.refused {
                return Err(Error::with_msg(too_large(&format!("capture \"{}\"", self.id), bytes)));
            }
            if out.late {
                return Err(too_slow());
            }
            return Err(e.trace(format!("{{% capture {} %}}", self.id)));
        }
        let text = String::from_utf8(out.buf).map_err(|_| Error::with_msg("capture rendered invalid UTF-8"))?;
        runtime.set_global(self.id.clone(), Value::scalar(text));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use liquid_core::runtime::RuntimeBuilder;

    use super::*;

    #[test]
    fn a_render_past_its_time_is_refused() {
        let mut language = Language::empty();
        language.filters.register(
            "append".into(),
            Box::new(Bounded {
                inner: Box::new(liquid_lib::stdlib::Append),
                growth: Growth::Append,
            }),
        );
        let template = Template::new(liquid_core::parser::parse("{{ a | append: 'b' }}", &language).unwrap());
        let globals = liquid_core::object!({"a": "x"});

        let runtime = RuntimeBuilder::new().set_globals(&globals).build();
        let mut out = Vec::new();
        template.render_to(&mut out, &runtime).unwrap();
        assert_eq!(out, b"xb");

        // The clock started at the render's first filter; one that started
        // long ago makes the next filter fail.
        let runtime = RuntimeBuilder::new().set_globals(&globals).build();
        *runtime.registers().get_mut::<Clock>() = Clock(Instant::now() - Duration::from_secs(1));
        let e = template.render_to(&mut Vec::new(), &runtime).unwrap_err();
        assert!(e.to_string().contains("rendering took longer than 500 ms"), "{e}");

        // The writer checks the time on every write.
        let mut w = LimitedWriter::new(10, Instant::now() - Duration::from_secs(1));
        assert!(io::Write::write(&mut w, b"abc").is_err());
        assert!(w.late && w.buf.is_empty() && w.refused.is_none());
        let mut w = LimitedWriter::new(3, Instant::now());
        assert_eq!(io::Write::write(&mut w, b"abc").unwrap(), 3);
        assert!(io::Write::write(&mut w, b"d").is_err());
        assert_eq!((w.buf.as_slice(), w.refused), (&b"abc"[..], Some(4)));
    }
}
