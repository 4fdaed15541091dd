//! Applications and pipeline templates: a producer submits only parameters, and the scheduler fills them into
//! the pipeline's template.
//!
//! An application groups pipelines; a pipeline definition is a name, a template (a task document, either
//! dialect, with `{{name}}` placeholders), and a parameter schema (names, required, default). Each pipeline
//! runs on its own queue, `<app>/<pipeline>`, unless its template names another.
//!
//! ```json
//! {"name": "ocr",
//!  "params": {"url": {"required": true}, "lang": {"default": "eng"}},
//!  "template": {"pipeline": [
//!    {"executorName": "wget", "commands": ["wget -O /mnt/pipe/image.png {{url}}"]},
//!    {"executorName": "tesseract", "commands": ["tesseract /mnt/pipe/image.png /mnt/pipe/out -l {{lang}}"]}],
//!   "maxAttempts": 3}}
//! ```
//!
//! **Values never become shell syntax.** Placeholders may stand in commands and in step `env` values only
//! (anywhere else the definition is refused). In a command, the value is quoted for the place it stands in,
//! found by lexing the command as `sh` does: outside quotes it becomes one single-quoted word (`'...'`, each
//! `'` written `'\''`), inside single quotes each `'` is written `'\''`, inside double quotes `\`, `"`, `$`
//! and `` ` `` are escaped with a backslash. A placeholder where a value cannot be quoted safely (inside
//! backticks, `$((...))`, `${...}`, a comment, or after a here-document `<<`) is refused when the pipeline is
//! defined. In an `env` value it is substituted as is: the executor passes it to the command as an
//! environment variable, which the shell never parses.
//!
//! The template is compiled once, when the pipeline is defined, into pieces of JSON text and holes, so
//! filling it in is one pass over the output with no JSON parsing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::pb::TaskSpec;
use crate::pipeline::{parse_task, validate_queue_name};

/// Longest application or pipeline name, in bytes (a DNS label: it names Kubernetes objects too).
pub const MAX_NAME_BYTES: usize = 63;
/// Most parameters one pipeline declares.
pub const MAX_PARAMS: usize = 64;

/// Why a definition or a parameter set was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// The definition is not valid (bad name, bad template, placeholder where none may be).
    #[error("{0}")]
    Invalid(String),
    /// Required parameters without a default were not given.
    #[error("missing parameter{}: {}", if .0.len() == 1 { "" } else { "s" }, .0.join(", "))]
    Missing(Vec<String>),
    /// Parameters the pipeline does not declare.
    #[error("unknown parameter{} {} (this pipeline takes: {})", if .unknown.len() == 1 { "" } else { "s" },
        .unknown.join(", "), if .known.is_empty() { "none".to_string() } else { .known.join(", ") })]
    Unknown {
        /// The names given that the pipeline does not declare.
        unknown: Vec<String>,
        /// The names it declares.
        known: Vec<String>,
    },
    /// A value that cannot be used (too long, or holding a NUL byte).
    #[error("parameter {name}: {why}")]
    BadValue {
        /// The parameter.
        name: String,
        /// What is wrong with its value.
        why: String,
    },
}

fn invalid(msg: impl Into<String>) -> TemplateError {
    TemplateError::Invalid(msg.into())
}

/// One declared parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ParamSpec {
    /// Must be given at submit. Default: true unless a default is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
    /// The value used when none is given (a string, number or boolean).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A pipeline definition, as stored and as sent by `pmctl app create` and the HTTP API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PipelineDef {
    /// Name within its application: 1 to 63 of `[a-z0-9-]`, starting and ending with a letter or digit.
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The parameters, by name. Absent: every placeholder of the template is a required parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<BTreeMap<String, ParamSpec>>,
    /// A task document (either dialect) with `{{name}}` placeholders; its task-level options (`maxAttempts`,
    /// `leaseSeconds`, `timeoutSeconds`, `priority`, `delaySeconds`, `queue`) are the pipeline's defaults.
    pub template: Value,
}

/// An application: a named group of pipelines.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppDef {
    /// 1 to 63 of `[a-z0-9-]`, starting and ending with a letter or digit.
    pub name: String,
    /// Free text for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Its pipelines (names unique).
    #[serde(default)]
    pub pipelines: Vec<PipelineDef>,
}

/// Checks an application or pipeline name (`what` names it in the error).
pub fn validate_name(what: &str, name: &str) -> Result<(), TemplateError> {
    let b = name.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= MAX_NAME_BYTES
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-';
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} name {name:?}: use 1 to {MAX_NAME_BYTES} lowercase letters, digits and '-', starting and ending \
             with a letter or digit"
        )))
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

impl PipelineDef {
    /// Parses a pipeline definition (checked when compiled).
    pub fn parse(json: &[u8]) -> Result<PipelineDef, TemplateError> {
        serde_json::from_slice(json).map_err(|e| invalid(format!("invalid pipeline definition: {e}")))
    }
}

/// How a value is written where its placeholder stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quoting {
    /// In a command, outside quotes: one single-quoted word.
    Word,
    /// In a command, inside single quotes.
    InSingle,
    /// In a command, inside double quotes.
    InDouble,
    /// In an `env` value: as is.
    Literal,
}

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

/// `v` written for `quoting` (see the module docs).
pub fn quote(v: &str, quoting: Quoting) -> String {
    match quoting {
        Quoting::Literal => v.to_string(),
        Quoting::Word => format!("'{}'", v.replace('\'', r"'\''")),
        Quoting::InSingle => v.replace('\'', r"'\''"),
        Quoting::InDouble => {
            let mut s = String::with_capacity(v.len() + 2);
            for c in v.chars() {
                if matches!(c, '\\' | '"' | '$' | '`') {
                    s.push('\\');
                }
                s.push(c);
            }
            s
        }
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

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A parameter value from JSON (a string, number or boolean), as the HTTP API and `pmctl` take them.
pub fn param_value(v: &Value) -> Option<String> {
    scalar(v)
}

/// A JSON object's members as one parameter set (values: strings, numbers and booleans).
pub fn params_of(v: &Value) -> Result<std::collections::HashMap<String, String>, String> {
    let Value::Object(obj) = v else { return Err("expected a JSON object of parameters".into()) };
    obj.iter()
        .map(|(k, v)| {
            scalar(v)
                .map(|s| (k.clone(), s))
                .ok_or_else(|| format!("parameter {k}: a value must be a string, number or boolean"))
        })
        .collect()
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

/// Constructs in whose presence a command takes no placeholder: inside them (or after them) the shell expands
/// or evaluates text in ways a quoted value does not survive, and following them is beyond a small lexer, so
/// a command holding any of them anywhere is refused rather than guessed at.
const UNSAFE_SYNTAX: &[(&str, &str)] = &[
    ("`", "in a command with backticks"),
    ("$(", "in a command with $(...)"),
    ("${", "in a command with ${...}"),
    ("$[", "in a command with $[...]"),
    ("$'", "in a command with $'...'"),
    ("$\"", "in a command with $\"...\""),
    ("((", "in a command with ((...))"),
    ("<<", "in a command with a here-document or here-string"),
    ("<(", "in a command with a process substitution"),
    (">(", "in a command with a process substitution"),
];

/// Words whose arguments the shell evaluates (as code or arithmetic): a value given to them would run.
const EVALUATING_WORDS: &[&str] = &["eval", "let", "[[", "declare", "typeset", "local", "readonly", "case"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lex {
    Plain,
    Single,
    Double,
}

/// The quoting of each placeholder in shell command `s`; `Err((name, where))` for the first one that stands
/// where a value cannot be quoted safely.
///
/// Deliberately small: a command with a placeholder may use words, `'...'`, `"..."` with plain `$NAME`
/// expansions, backslashes, redirections, pipes, `;`, `&&`, `||`, `(...)` and `{ ...; }`, which this lexer
/// follows exactly in both `sh` (dash) and bash; anything else ([`UNSAFE_SYNTAX`], [`EVALUATING_WORDS`], a
/// comment) makes the command refuse placeholders.
fn shell_contexts(s: &str, found: &[(usize, usize, String)]) -> Result<Vec<Quoting>, (String, &'static str)> {
    let first = || found[0].2.clone();
    if let Some((_, why)) = UNSAFE_SYNTAX.iter().find(|(pat, _)| s.contains(pat)) {
        return Err((first(), why));
    }
    let is_word = |c: char| !(c.is_whitespace() || ";&|()<>".contains(c));
    if s.split(|c: char| !is_word(c)).any(|w| EVALUATING_WORDS.contains(&w)) {
        return Err((first(), "in a command using eval, let, [[, declare, typeset, local, readonly or case"));
    }
    let b = s.as_bytes();
    let mut state = Lex::Plain;
    let (mut i, mut h) = (0usize, 0usize);
    let mut out = Vec::with_capacity(found.len());
    while i < b.len() {
        if h < found.len() && i == found[h].0 {
            let q = match state {
                Lex::Plain => Quoting::Word,
                Lex::Single => Quoting::InSingle,
                Lex::Double => {
                    // `"$NAME{{v}}"` would extend the variable's name with the value.
                    let before = &b[..i];
                    let name_len = before.iter().rev().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
                    if before.len() > name_len && before[before.len() - name_len - 1] == b'$' {
                        return Err((found[h].2.clone(), "right after a $NAME inside double quotes"));
                    }
                    Quoting::InDouble
                }
            };
            out.push(q);
            i = found[h].1;
            h += 1;
            continue;
        }
        let c = b[i];
        let mut step = 1;
        match state {
            Lex::Single => {
                if c == b'\'' {
                    state = Lex::Plain;
                }
            }
            Lex::Double => match c {
                b'\\' => step = 2,
                b'"' => state = Lex::Plain,
                _ => {}
            },
            Lex::Plain => match c {
                b'\\' => step = 2,
                b'\'' => state = Lex::Single,
                b'"' => state = Lex::Double,
                b'#' if i == 0 || !is_word(b[i - 1] as char) => {
                    // A comment: it runs to the end of the line, where a value's newline would end it.
                    if h < found.len() {
                        return Err((found[h].2.clone(), "in a comment, or after one"));
                    }
                    break;
                }
                _ => {}
            },
        }
        i += step;
    }
    if out.len() < found.len() {
        // A placeholder inside an escape (`\{{x}}`) was skipped over: refuse it.
        return Err((found[out.len()].2.clone(), "right after a backslash"));
    }
    if state != Lex::Plain {
        return Err((first(), "in a command with an unterminated quote"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn def(template: Value, params: Option<Value>) -> PipelineDef {
        let mut d = json!({"name": "ocr", "template": template});
        if let Some(p) = params {
            d["params"] = p;
        }
        serde_json::from_value(d).unwrap()
    }

    fn one(cmd: &str) -> Value {
        json!({"pipeline": [{"executorName": "sh", "commands": [cmd]}]})
    }

    fn vals(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    /// The first command of the filled task.
    fn filled(cmd: &str, v: &str) -> String {
        let c = Compiled::new("app", &def(one(cmd), None)).unwrap();
        let spec = c.fill(&vals(&[("v", v)]), 1 << 20).unwrap();
        parse_task(&spec.payload).unwrap().steps[0].commands[0].line().to_string()
    }

    /// What `sh` prints for `printf %s <cmd's words>`: runs the real shell.
    fn sh_out(cmd: &str) -> String {
        let out = std::process::Command::new("sh").arg("-c").arg(cmd).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    }

    const NASTY: &[&str] = &[
        "'; rm -rf /; '",
        "$(touch /tmp/pm-template-pwned)",
        "`touch /tmp/pm-template-pwned`",
        "a\"b\\c$HOME'd",
        "line1\nline2; echo injected",
        "*",
        "",
        "--flag",
        "'\"'\"'",
        "\\",
        "${HOME}",
    ];

    #[test]
    fn values_stay_literal_in_every_quoting_context() {
        for v in NASTY {
            for cmd in
                ["printf %s {{v}}", "printf %s 'pre{{v}}post'", "printf %s \"pre{{v}}post\"", "printf %s x{{v}}y"]
            {
                let line = filled(cmd, v);
                let expect = match cmd {
                    c if c.contains("pre") => format!("pre{v}post"),
                    c if c.contains("x{{") => format!("x{v}y"),
                    _ => v.to_string(),
                };
                assert_eq!(sh_out(&line), expect, "{cmd} with {v:?} became {line}");
            }
        }
        assert!(!std::path::Path::new("/tmp/pm-template-pwned").exists());
    }

    #[test]
    fn values_stay_literal_under_bash_too() {
        if !std::path::Path::new("/bin/bash").exists() {
            return;
        }
        for v in NASTY {
            for cmd in
                ["printf %s {{v}}", "printf %s 'pre{{v}}post'", "printf %s \"pre{{v}}post\"", "(printf %s {{v}})"]
            {
                let line = filled(cmd, v);
                let out = std::process::Command::new("/bin/bash").arg("-c").arg(&line).output().unwrap();
                let got = String::from_utf8(out.stdout).unwrap();
                assert!(got.contains(v) || v.is_empty(), "{cmd} with {v:?} became {line}: {got:?}");
            }
        }
        assert!(!std::path::Path::new("/tmp/pm-template-pwned").exists());
    }

    #[test]
    fn unsafe_places_are_refused_at_definition() {
        for cmd in [
            "echo `echo {{v}}`",
            "echo $(( {{v}} + 1 ))",
            "echo ${X:-{{v}}}",
            "echo hi # {{v}}",
            "cat <<EOF\n{{v}}\nEOF",
            "echo \\{{v}}",
            "echo '{{v}}",
            "x=$(case a in a) echo {{v}};; esac)",
            // Each of these once let a value out of its quotes in dash or bash.
            "echo \"$( (true) ; echo {{v}} )\"",
            "echo \"$(f() { echo a; }; f {{v}})\"",
            "echo $(true)#'\n{{v}}\n' #'",
            "echo $((1))#'\n{{v}}\n' #'",
            "echo \"${X:-'{{v}}'}\"",
            "echo $'{{v}}'",
            "echo $[ {{v}} ]",
            "(( {{v}} ))",
            "let n={{v}}",
            "[[ {{v}} -eq 1 ]]",
            "eval echo {{v}}",
            "declare -i n={{v}}",
            "cat <(echo a) {{v}}",
            "echo \"$HOME{{v}}\"",
            "echo a # c\necho {{v}}",
        ] {
            let e = Compiled::new("app", &def(one(cmd), None)).unwrap_err().to_string();
            assert!(e.contains("{{v}}") && e.contains("cannot be quoted safely"), "{cmd}: {e}");
        }
        // A '#' inside a word is not a comment; '#' inside quotes neither; subshells and groups are fine.
        assert_eq!(sh_out(&filled("printf %s a#{{v}}", "1; b")), "a#1; b");
        assert_eq!(sh_out(&filled("printf %s '#' \"#\" {{v}}", "x")), "##x");
        assert_eq!(sh_out(&filled("(printf %s {{v}}) && { printf %s \"$HOME\" >/dev/null; }", "y")), "y");
        assert!(Compiled::new("app", &def(one("cat <<< {{v}}"), None)).is_err(), "here-strings too");
    }

    #[test]
    fn placeholders_only_in_commands_and_env() {
        for t in [
            json!({"pipeline": [{"executorName": "{{v}}", "commands": ["true"]}]}),
            json!({"pipeline": [{"executorName": "sh", "workDir": "{{v}}", "commands": ["true"]}]}),
            json!({"pipeline": [{"executorName": "sh", "commands": ["true"]}], "queue": "{{v}}"}),
        ] {
            let e = Compiled::new("app", &def(t, None)).unwrap_err().to_string();
            assert!(e.contains("may stand only in commands"), "{e}");
        }
        let t = json!({"pipeline": [{"executorName": "sh", "env": {"URL": "{{v}}"}, "commands": ["echo \"$URL\""]}]});
        let c = Compiled::new("app", &def(t, None)).unwrap();
        let task = parse_task(&c.fill(&vals(&[("v", "'$(x)\"")]), 100).unwrap().payload).unwrap();
        assert_eq!(task.steps[0].env["URL"], "'$(x)\"", "env values are passed as is");
    }

    #[test]
    fn params_are_checked_at_submit() {
        let t = json!({"pipeline": [{"executor": "wget", "commands": ["wget -O /mnt/pipe/image.png {{url}} {{ lang }}"]}],
                       "maxAttempts": 3, "leaseSeconds": 20});
        let c = Compiled::new("myname", &def(t.clone(), Some(json!({"url": {}, "lang": {"default": "eng"}})))).unwrap();
        assert_eq!(c.queue, "myname/ocr");
        assert_eq!((c.spec.max_attempts, c.spec.lease_ms, c.spec.executors.clone()), (3, 20_000, vec!["wget".into()]));
        assert_eq!(c.param_names(), vec!["lang", "url"]);
        let spec = c.fill(&vals(&[("url", "http://x/a b.png")]), 100).unwrap();
        let task = parse_task(&spec.payload).unwrap();
        assert_eq!(task.steps[0].commands[0].line(), "wget -O /mnt/pipe/image.png 'http://x/a b.png' 'eng'");
        assert_eq!(spec.queue, "myname/ocr");
        assert_eq!(c.fill(&vals(&[]), 100).unwrap_err(), TemplateError::Missing(vec!["url".into()]));
        let e = c.fill(&vals(&[("url", "u"), ("urll", "x")]), 100).unwrap_err().to_string();
        assert_eq!(e, "unknown parameter urll (this pipeline takes: lang, url)");
        let e = c.fill(&vals(&[("url", "0123456789")]), 4).unwrap_err().to_string();
        assert!(e.contains("url") && e.contains("limit is 4"), "{e}");
        assert!(c.fill(&vals(&[("url", "a\0b")]), 100).unwrap_err().to_string().contains("NUL"));
        // Undeclared placeholders, bad defaults, key in the template.
        let e = Compiled::new("a", &def(t.clone(), Some(json!({"url": {}})))).unwrap_err().to_string();
        assert!(e.contains("{{lang}}") && e.contains("does not declare"), "{e}");
        let e = Compiled::new("a", &def(t, Some(json!({"url": {}, "lang": {"default": [1]}})))).unwrap_err();
        assert!(e.to_string().contains("default must be"), "{e}");
        let keyed = json!({"pipeline": [{"executorName": "sh", "commands": ["true"]}], "key": "k"});
        assert!(Compiled::new("a", &def(keyed, None)).unwrap_err().to_string().contains("key and idempotencyKey"));
        // Without "params", every placeholder is required; numbers and booleans are taken as text.
        let c = Compiled::new("a", &def(one("echo {{a}} {{b}}"), None)).unwrap();
        assert_eq!(c.fill(&vals(&[("a", "1")]), 9).unwrap_err(), TemplateError::Missing(vec!["b".into()]));
        assert_eq!(param_value(&json!(2.5)).as_deref(), Some("2.5"));
        assert_eq!(param_value(&json!(true)).as_deref(), Some("true"));
        assert_eq!(param_value(&json!({"a": 1})), None);
    }

    #[test]
    fn the_commands_dialect_and_follow_ups_take_parameters_too() {
        let t = json!({"commands": [{"executorName": "sh", "commandLines": ["echo {{v}}"]}],
                       "onSuccess": [{"pipeline": [{"executorName": "sh", "commands": [{"run": "echo {{v}}!", "timeoutSeconds": 5}]}]}]});
        let c = Compiled::new("a", &def(t, None)).unwrap();
        let spec = c.fill(&vals(&[("v", "x y")]), 100).unwrap();
        let doc: Value = serde_json::from_slice(&spec.payload).unwrap();
        assert_eq!(doc["commands"][0]["commandLines"][0], "echo 'x y'");
        assert_eq!(doc["onSuccess"][0]["pipeline"][0]["commands"][0]["run"], "echo 'x y'!");
    }

    #[test]
    fn names_and_documents_are_checked() {
        for bad in ["", "-a", "a-", "A", "a_b", "a/b", &"a".repeat(64)] {
            assert!(validate_name("pipeline", bad).is_err(), "{bad:?}");
        }
        validate_name("pipeline", "ocr-2").unwrap();
        let doc = json!({"name": "myname", "pipelines": [
            {"name": "ocr", "template": one("echo {{v}}")}, {"name": "ocr", "template": one("true")}]});
        let e = AppDef::parse(doc.to_string().as_bytes()).unwrap_err().to_string();
        assert!(e.contains("defined twice"), "{e}");
        let e = AppDef::parse(br#"{"name":"x","pipelines":[],"extra":1}"#).unwrap_err().to_string();
        assert!(e.contains("unknown field"), "{e}");
        let e = Compiled::new("a", &def(json!({"pipeline": []}), None)).unwrap_err().to_string();
        assert!(e.starts_with("template: ") && e.contains("no steps"), "{e}");
        let e = Compiled::new("a", &def(json!("echo"), None)).unwrap_err().to_string();
        assert!(e.contains("task document"), "{e}");
        let e = Compiled::new("a", &def(one("echo \u{E000}"), None)).unwrap_err().to_string();
        assert!(e.contains("reserved"), "{e}");
        // Reserved characters in a field name are refused too (they once made a hole out of a key).
        for key in ["\u{E000}9\u{E001}", "\u{E000}0\u{E001}"] {
            let mut t = one("echo {{v}}");
            t[key] = json!(1);
            let e = Compiled::new("a", &def(t, None)).unwrap_err().to_string();
            assert!(e.contains("reserved"), "{e}");
            let t = json!({"pipeline": [{"executorName": "sh", "env": {key: "x"}, "commands": ["echo {{v}}"]}]});
            assert!(Compiled::new("a", &def(t, None)).unwrap_err().to_string().contains("reserved"));
        }
        // Not placeholders: left as they are.
        let c = Compiled::new("a", &def(one("docker ps --format {{.Names}} {{ }} {x}"), None)).unwrap();
        assert!(c.param_names().is_empty());
    }
}
