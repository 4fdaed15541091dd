//! Compiling a pipeline definition once, when it is defined, into pieces of JSON text and holes, so that
//! filling it in on every submit is one pass over the output with no JSON parsing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::app::{scalar, validate_name, AppDef, PipelineDef};
use super::error::{invalid, TemplateError};
use super::shell::{quote, shell_contexts, Quoting};
use crate::pipeline::{parse_task, validate_queue_name};
use pm_protocol::pb::TaskSpec;

/// Most parameters one pipeline declares.
pub const MAX_PARAMS: usize = 64;

#[derive(Debug, Clone)]
enum Piece {
    /// JSON text, copied as is.
    Text(String),
    /// A parameter's value, quoted, then escaped as JSON string content.
    Hole { param: usize, quoting: Quoting },
}

#[derive(Debug, Clone)]
struct Param {
    name: String,
    default: Option<String>,
    required: bool,
}

/// A pipeline ready to be filled in: what [`Compiled::fill`] uses on every submit.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// `<app>/<pipeline>` unless the template names a queue.
    pub queue: String,
    /// The template's scheduling options (payload empty): the base of every task of this pipeline.
    pub spec: TaskSpec,
    params: Vec<Param>,
    pieces: Vec<Piece>,
}

/// Marks a hole in the serialized template (private-use characters, refused in templates).
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

impl Compiled {
    /// Checks a definition of application `app` and compiles its template.
    pub fn new(app: &str, def: &PipelineDef) -> Result<Compiled, TemplateError> {
        validate_name("application", app)?;
        validate_name("pipeline", &def.name)?;
        let Value::Object(_) = &def.template else {
            return Err(invalid("template: must be a task document (a JSON object with \"pipeline\" or \"commands\")"));
        };
        let mut template = def.template.clone();
        let mut holes: Vec<(String, Quoting)> = Vec::new();
        mark_doc(&mut template, "template", 0, &mut holes)?;
        let names: BTreeSet<&str> = holes.iter().map(|(n, _)| n.as_str()).collect();
        let params: Vec<Param> = match &def.params {
            None => names.iter().map(|n| Param { name: n.to_string(), default: None, required: true }).collect(),
            Some(declared) => {
                if declared.len() > MAX_PARAMS {
                    return Err(invalid(format!("more than {MAX_PARAMS} parameters")));
                }
                if let Some(n) = names.iter().find(|n| !declared.contains_key(**n)) {
                    return Err(invalid(format!("template uses {{{{{n}}}}}, which \"params\" does not declare")));
                }
                let mut out = Vec::with_capacity(declared.len());
                for (name, spec) in declared {
                    if !is_ident(name) {
                        return Err(invalid(format!(
                            "parameter name {name:?}: use letters, digits, '_' and '-', starting with a letter or '_'"
                        )));
                    }
                    let default = match &spec.default {
                        None => None,
                        Some(v) => Some(scalar(v).ok_or_else(|| {
                            invalid(format!("parameter {name}: the default must be a string, number or boolean"))
                        })?),
                    };
                    let required = spec.required.unwrap_or(default.is_none());
                    out.push(Param { name: name.clone(), default, required });
                }
                out
            }
        };
        if params.len() > MAX_PARAMS {
            return Err(invalid(format!("more than {MAX_PARAMS} parameters")));
        }
        let index: BTreeMap<&str, usize> = params.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
        let text = serde_json::to_string(&template).map_err(|e| invalid(format!("template: {e}")))?;
        let mut pieces = Vec::new();
        let mut rest = text.as_str();
        while let Some(at) = rest.find(OPEN) {
            pieces.push(Piece::Text(rest[..at].to_string()));
            let after = &rest[at + OPEN.len_utf8()..];
            let end = after.find(CLOSE).ok_or_else(|| invalid("template: internal marker error"))?;
            let hole: usize = after[..end].parse().map_err(|_| invalid("template: internal marker error"))?;
            let (name, quoting) = holes.get(hole).ok_or_else(|| invalid("template: internal marker error"))?;
            let param = index.get(name.as_str()).copied().ok_or_else(|| invalid("template: internal marker error"))?;
            pieces.push(Piece::Hole { param, quoting: *quoting });
            rest = &after[end + CLOSE.len_utf8()..];
        }
        pieces.push(Piece::Text(rest.to_string()));
        let mut compiled = Compiled { queue: String::new(), spec: TaskSpec::default(), params, pieces };
        // The template must be a valid task whatever the values: try it with a plain one.
        let sample: BTreeMap<String, String> =
            compiled.params.iter().map(|p| (p.name.clone(), "x".to_string())).collect();
        let doc = compiled.render(&sample, usize::MAX)?;
        let task = parse_task(&doc).map_err(|e| {
            let e = e.to_string();
            invalid(format!("template: {}", e.strip_prefix("invalid task: ").unwrap_or(&e)))
        })?;
        if !task.spec.key.is_empty() || !task.spec.idempotency_key.is_empty() {
            return Err(invalid("template: key and idempotencyKey are given with each submit, not in the template"));
        }
        let queue = if task.spec.queue.is_empty() { format!("{app}/{}", def.name) } else { task.spec.queue.clone() };
        validate_queue_name(&queue).map_err(invalid)?;
        compiled.queue = queue.clone();
        compiled.spec = TaskSpec { queue, ..task.spec };
        Ok(compiled)
    }

    /// The declared parameter names, sorted.
    pub fn param_names(&self) -> Vec<String> {
        self.params.iter().map(|p| p.name.clone()).collect()
    }

    /// The names of the parameters that must be given (required, without a default), sorted.
    pub fn required_names(&self) -> Vec<String> {
        self.params.iter().filter(|p| p.required && p.default.is_none()).map(|p| p.name.clone()).collect()
    }

    /// Fills the template with `values` and returns the task to submit (payload and options). Missing and
    /// unknown parameters, and values longer than `max_value_bytes` or holding NUL, are refused.
    pub fn fill(&self, values: &BTreeMap<String, String>, max_value_bytes: usize) -> Result<TaskSpec, TemplateError> {
        let payload = self.render(values, max_value_bytes)?;
        Ok(TaskSpec { payload: payload.into(), ..self.spec.clone() })
    }

    fn render(&self, values: &BTreeMap<String, String>, max_value_bytes: usize) -> Result<Vec<u8>, TemplateError> {
        let unknown: Vec<String> =
            values.keys().filter(|k| !self.params.iter().any(|p| &p.name == *k)).cloned().collect();
        if !unknown.is_empty() {
            return Err(TemplateError::Unknown { unknown, known: self.param_names() });
        }
        let mut resolved: Vec<&str> = Vec::with_capacity(self.params.len());
        let mut missing = Vec::new();
        for p in &self.params {
            match values.get(&p.name).or(p.default.as_ref()) {
                Some(v) => {
                    if v.len() > max_value_bytes {
                        let why = format!("{} bytes; the limit is {max_value_bytes}", v.len());
                        return Err(TemplateError::BadValue { name: p.name.clone(), why });
                    }
                    if v.contains('\0') {
                        return Err(TemplateError::BadValue { name: p.name.clone(), why: "holds a NUL byte".into() });
                    }
                    resolved.push(v);
                }
                None if p.required => {
                    missing.push(p.name.clone());
                    resolved.push("");
                }
                None => resolved.push(""),
            }
        }
        if !missing.is_empty() {
            return Err(TemplateError::Missing(missing));
        }
        let mut out =
            String::with_capacity(self.pieces.iter().map(|p| if let Piece::Text(t) = p { t.len() } else { 16 }).sum());
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Hole { param, quoting } => push_json_escaped(&mut out, &quote(resolved[*param], *quoting)),
            }
        }
        Ok(out.into_bytes())
    }
}

fn push_json_escaped(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
}

fn is_ident(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        && s.len() <= 64
}

/// The placeholders of `s`: (start, end, name) for each `{{ name }}`.
fn placeholders(s: &str) -> Vec<(usize, usize, String)> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(off) = s[i..].find("{{") {
        let start = i + off;
        let mut j = start + 2;
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        let name_start = j;
        while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'-') {
            j += 1;
        }
        let name = &s[name_start..j];
        while j < b.len() && b[j] == b' ' {
            j += 1;
        }
        if is_ident(name) && s[j..].starts_with("}}") {
            out.push((start, j + 2, name.to_string()));
            i = j + 2;
        } else {
            i = start + 1;
        }
    }
    out
}

/// Replaces each placeholder of `s` by a marker and records its hole.
fn mark_string(
    s: &mut String,
    path: &str,
    shell: Option<bool>,
    holes: &mut Vec<(String, Quoting)>,
) -> Result<(), TemplateError> {
    if s.contains(OPEN) || s.contains(CLOSE) {
        return Err(invalid(format!("{path}: holds a reserved character (U+E000 or U+E001)")));
    }
    let found = placeholders(s);
    if found.is_empty() {
        return Ok(());
    }
    let quotings: Vec<Quoting> = match shell {
        None => {
            let n = &found[0].2;
            return Err(invalid(format!("{path}: {{{{{n}}}}} may stand only in commands and in step env values")));
        }
        Some(false) => vec![Quoting::Literal; found.len()],
        Some(true) => shell_contexts(s, &found).map_err(|(name, why)| {
            invalid(format!(
                "{path}: {{{{{name}}}}} stands {why}, where a value cannot be quoted safely; put it outside, or pass \
                 it through a step env value and use \"$NAME\""
            ))
        })?,
    };
    let mut out = String::with_capacity(s.len());
    let mut at = 0;
    for ((start, end, name), quoting) in found.into_iter().zip(quotings) {
        out.push_str(&s[at..start]);
        out.push(OPEN);
        out.push_str(&holes.len().to_string());
        out.push(CLOSE);
        holes.push((name, quoting));
        at = end;
    }
    out.push_str(&s[at..]);
    *s = out;
    Ok(())
}

/// Marks the holes of a task document (the template, or a follow-up inside it).
fn mark_doc(v: &mut Value, path: &str, depth: usize, holes: &mut Vec<(String, Quoting)>) -> Result<(), TemplateError> {
    if depth > crate::pipeline::MAX_FLOW_DEPTH {
        return Err(invalid(format!("{path}: follow-ups nested too deep")));
    }
    let Value::Object(obj) = v else { return mark_other(v, path, holes) };
    for (k, field) in obj.iter_mut() {
        check_key(k, path)?;
        let p = format!("{path}.{k}");
        match (k.as_str(), field) {
            ("pipeline" | "commands", Value::Array(steps)) => {
                for (i, step) in steps.iter_mut().enumerate() {
                    mark_step(step, &format!("{p}[{i}]"), holes)?;
                }
            }
            ("onSuccess" | "onFailure", Value::Array(docs)) => {
                for (i, doc) in docs.iter_mut().enumerate() {
                    mark_doc(doc, &format!("{p}[{i}]"), depth + 1, holes)?;
                }
            }
            (_, other) => mark_other(other, &p, holes)?,
        }
    }
    Ok(())
}

fn mark_step(v: &mut Value, path: &str, holes: &mut Vec<(String, Quoting)>) -> Result<(), TemplateError> {
    let Value::Object(obj) = v else { return mark_other(v, path, holes) };
    for (k, field) in obj.iter_mut() {
        check_key(k, path)?;
        let p = format!("{path}.{k}");
        match (k.as_str(), field) {
            ("commands" | "commandLines", Value::Array(cmds)) => {
                for (i, c) in cmds.iter_mut().enumerate() {
                    let cp = format!("{p}[{i}]");
                    match c {
                        Value::String(s) => mark_string(s, &cp, Some(true), holes)?,
                        Value::Object(o) => {
                            for (ck, cv) in o.iter_mut() {
                                check_key(ck, &cp)?;
                                match (ck.as_str(), cv) {
                                    ("run", Value::String(s)) => {
                                        mark_string(s, &format!("{cp}.run"), Some(true), holes)?
                                    }
                                    (_, other) => mark_other(other, &format!("{cp}.{ck}"), holes)?,
                                }
                            }
                        }
                        other => mark_other(other, &cp, holes)?,
                    }
                }
            }
            ("env", Value::Object(env)) => {
                for (ek, ev) in env.iter_mut() {
                    check_key(ek, &p)?;
                    match ev {
                        Value::String(s) => mark_string(s, &format!("{p}.{ek}"), Some(false), holes)?,
                        other => mark_other(other, &format!("{p}.{ek}"), holes)?,
                    }
                }
            }
            (_, other) => mark_other(other, &p, holes)?,
        }
    }
    Ok(())
}

/// A field (or env) name may hold neither a placeholder nor the compiler's reserved characters.
fn check_key(k: &str, path: &str) -> Result<(), TemplateError> {
    if k.contains(OPEN) || k.contains(CLOSE) {
        return Err(invalid(format!("{path}: a field name holds a reserved character (U+E000 or U+E001)")));
    }
    if !placeholders(k).is_empty() {
        return Err(invalid(format!("{path}: a field name cannot be a parameter")));
    }
    Ok(())
}

/// Anywhere else: no placeholder may stand here.
fn mark_other(v: &mut Value, path: &str, holes: &mut Vec<(String, Quoting)>) -> Result<(), TemplateError> {
    match v {
        Value::String(s) => mark_string(s, path, None, holes),
        Value::Array(a) => {
            a.iter_mut().enumerate().try_for_each(|(i, x)| mark_other(x, &format!("{path}[{i}]"), holes))
        }
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                check_key(k, path)?;
                mark_other(x, &format!("{path}.{k}"), holes)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

impl AppDef {
    /// Parses and checks an application document (names, unique pipelines, every template).
    pub fn parse(json: &[u8]) -> Result<AppDef, TemplateError> {
        let app: AppDef = serde_json::from_slice(json).map_err(|e| invalid(format!("invalid application: {e}")))?;
        app.check()?;
        Ok(app)
    }

    /// Checks names, duplicates and every pipeline's template.
    pub fn check(&self) -> Result<(), TemplateError> {
        validate_name("application", &self.name)?;
        let mut seen = BTreeSet::new();
        for p in &self.pipelines {
            if !seen.insert(p.name.as_str()) {
                return Err(invalid(format!("pipeline {:?} is defined twice", p.name)));
            }
            Compiled::new(&self.name, p)?;
        }
        Ok(())
    }
}
