//! Datasets of examples for a prompt: TSV, CSV and JSONL files whose columns map to the
//! prompt's input variables, plus a label (classify) or answer (generate) column.
//!
//! Every bad row is reported with its file and line — wrong column count, unknown label,
//! invalid JSON, empty input — and nothing is silently dropped: a file with issues does not
//! load. TSV follows the quirks of the RLPrompt few-shot files: a header line, and each line
//! split on its last tab (sentences may contain tabs), quotes read literally.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::document::PromptDocument;
use crate::settings::Task;

/// One example: input variables, and the gold label id or answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Example {
    /// 1-based line in the file.
    pub line: usize,
    pub input: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dataset {
    pub path: PathBuf,
    /// SHA-256 of the file's bytes (keys evaluations).
    pub hash: String,
    pub examples: Vec<Example>,
}

/// A problem with one line of a dataset file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatasetIssue {
    pub path: PathBuf,
    /// 1-based; 0 for the file as a whole.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for DatasetIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
        }
    }
}

/// How a file's columns map to the prompt.
#[derive(Clone, Debug, PartialEq)]
pub struct DatasetSpec {
    /// Input variables the prompt reads.
    pub variables: Vec<String>,
    /// Of those, the ones an example may leave out (optional in the schema, or with a default).
    pub optional: Vec<String>,
    /// Variable → column, where they differ (`reprompt.columns`).
    pub columns: Map<String, Value>,
    /// Variable → the JSON types its input schema allows (`string`, `integer`, …), where it
    /// names any: a value of another type is a bad row (a text cell counts where it spells one
    /// of them, and is read as that value: `3` for an integer).
    pub types: BTreeMap<String, Vec<String>>,
    pub task: Task,
    pub labels: Vec<String>,
    /// Each label's answer words, its name first (`Settings::label_words`); a gold answer may
    /// be any of them.
    pub label_words: Vec<Vec<String>>,
    /// The words the label column names each id by instead (`reprompt.data_labels`, any of
    /// a list): where given, the label words are not read from the data.
    pub data_labels: Vec<Vec<String>>,
    pub label_column: String,
    pub answer_column: String,
}

impl DatasetSpec {
    /// The mapping a prompt file declares: its input variables, `reprompt.columns`,
    /// `reprompt.label_column` (default `label`) and `reprompt.answer_column` (default `answer`).
    pub fn for_document(doc: &PromptDocument) -> Self {
        let settings = &doc.settings;
        let mut variables = doc.declared_variables().unwrap_or_default();
        if variables.is_empty() {
            let mut seen = Vec::new();
            for v in &doc.scan.variables {
                if !seen.contains(&v.name) {
                    seen.push(v.name.clone());
                }
            }
            variables = seen;
        }
        let required: Option<Vec<String>> = doc.input_schema().map(|schema| {
            schema
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
                .unwrap_or_default()
        });
        let defaults: Vec<String> = doc
            .reserved
            .get("input")
            .and_then(|i| i.get("default"))
            .and_then(Value::as_object)
            .map(|d| d.keys().cloned().collect())
            .unwrap_or_default();
        let optional = variables
            .iter()
            .filter(|v| defaults.contains(v) || required.as_ref().is_some_and(|r| !r.contains(v)))
            .cloned()
            .collect();
        let types = doc
            .input_schema()
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|properties| {
                properties
                    .iter()
                    .filter_map(|(name, property)| {
                        // A list with something other than a type name (`x?(object): any`
                        // compiles to `[null, "null"]`, as in the reference) constrains nothing.
                        let types: Vec<String> = match property.get("type")? {
                            Value::String(t) => vec![t.clone()],
                            Value::Array(ts) => {
                                ts.iter().map(|t| t.as_str().map(str::to_string)).collect::<Option<_>>()?
                            }
                            _ => return None,
                        };
                        (!types.is_empty()).then(|| (name.clone(), types))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            variables,
            optional,
            columns: settings.columns.clone().unwrap_or_default(),
            types,
            task: settings.task_or_default(),
            labels: settings.labels.as_ref().map(|l| l.value.clone()).unwrap_or_default(),
            label_words: settings.label_words.clone(),
            data_labels: settings.data_labels.as_ref().map(|d| d.value.clone()).unwrap_or_default(),
            label_column: settings.label_column.clone().unwrap_or_else(|| "label".into()),
            answer_column: settings.answer_column.clone().unwrap_or_else(|| "answer".into()),
        }
    }

    /// This mapping with labels read by id alone: loading the data with it and with `self`
    /// gives the same labels exactly where the data does not depend on the label words.
    pub fn by_ids(&self) -> Self {
        Self {
            labels: vec![String::new(); self.labels.len()],
            label_words: vec![Vec::new(); self.labels.len()],
            data_labels: Vec::new(),
            ..self.clone()
        }
    }

    fn column_of<'a>(&'a self, variable: &'a str) -> &'a str {
        self.columns.get(variable).and_then(Value::as_str).unwrap_or(variable)
    }

    fn gold_column(&self) -> &str {
        match self.task {
            Task::Classify => &self.label_column,
            Task::Generate => &self.answer_column,
        }
    }
}

/// Examples of `later` whose input is an example's input in `earlier` too, as (line in
/// `later`, line in `earlier`) in `later`'s order: scores on them are not held out. Inputs
/// compare whole by their letters and digits, case, spacing and punctuation aside (`It's
/// great!` is `it 's great .`, a copy tokenized otherwise); the gold is not compared.
pub fn shared_inputs(earlier: &Dataset, later: &Dataset) -> Vec<(usize, usize)> {
    let key = |e: &Example| {
        let folded: Map<String, Value> = e.input.iter().map(|(k, v)| (k.clone(), folded(v))).collect();
        serde_json::to_string(&folded).unwrap_or_default()
    };
    let mut lines = std::collections::HashMap::new();
    for example in &earlier.examples {
        lines.entry(key(example)).or_insert(example.line);
    }
    later.examples.iter().filter_map(|e| lines.get(&key(e)).map(|&line| (e.line, line))).collect()
}

/// An input value as [`shared_inputs`] compares it: every text lower-cased down to its letters
/// and digits (kept whole where it has none, so `?!` is not `...`).
fn folded(value: &Value) -> Value {
    match value {
        Value::String(text) => {
            let kept: String = text.chars().filter(|c| c.is_alphanumeric()).flat_map(char::to_lowercase).collect();
            Value::String(if kept.is_empty() { text.clone() } else { kept })
        }
        Value::Array(items) => Value::Array(items.iter().map(folded).collect()),
        Value::Object(fields) => Value::Object(fields.iter().map(|(k, v)| (k.clone(), folded(v))).collect()),
        other => other.clone(),
    }
}

/// Most examples one file may hold.
pub const MAX_EXAMPLES: usize = 1_000_000;

/// Loads `path` (format by extension: `.tsv`, `.csv`, `.jsonl`/`.ndjson`).
pub fn load(path: &Path, spec: &DatasetSpec) -> Result<Dataset, Vec<DatasetIssue>> {
    let issue = |line: usize, message: String| DatasetIssue { path: path.to_path_buf(), line, message };
    let bytes = std::fs::read(path).map_err(|e| vec![issue(0, format!("cannot read: {e}"))])?;
    let hash = crate::hash::sha256_hex(&bytes);
    let text = String::from_utf8(bytes)
        .map_err(|e| vec![issue(0, format!("not UTF-8 (byte {})", e.utf8_error().valid_up_to()))])?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let extension = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let rows = match extension.as_str() {
        "tsv" => read_tsv(text),
        "csv" => read_csv(text),
        "jsonl" | "ndjson" => read_jsonl(text),
        other => return Err(vec![issue(0, format!("unknown dataset format `.{other}`: use .tsv, .csv or .jsonl"))]),
    };
    let (header, rows, mut issues) = match rows {
        Ok(parsed) => parsed,
        Err((line, message)) => return Err(vec![issue(line, message)]),
    };
    let issues_of = |issues: Vec<(usize, String)>| issues.into_iter().map(|(l, m)| issue(l, m)).collect::<Vec<_>>();
    // Columns the prompt needs must exist (checked once, against the header / first row keys).
    if let Some((header_line, header)) = &header {
        let mut missing = Vec::new();
        for variable in spec.variables.iter().filter(|v| !spec.optional.contains(v)) {
            let column = spec.column_of(variable);
            if !header.iter().any(|h| h == column) {
                missing.push(format!("`{column}` (for `{{{{{variable}}}}}`)"));
            }
        }
        if !header.iter().any(|h| h == spec.gold_column()) {
            missing.push(format!(
                "`{}` (the {})",
                spec.gold_column(),
                if spec.task == Task::Classify { "label" } else { "answer" }
            ));
        }
        if !missing.is_empty() {
            return Err(vec![issue(
                *header_line,
                format!("missing column {}; the header has {}", missing.join(", "), header.join(", ")),
            )]);
        }
    }
    let mut examples = Vec::with_capacity(rows.len());
    for (line, row) in rows {
        if examples.len() >= MAX_EXAMPLES {
            issues.push((line, format!("more than {MAX_EXAMPLES} examples")));
            break;
        }
        match to_example(line, &row, spec) {
            Ok(example) => examples.push(example),
            Err(message) => issues.push((line, message)),
        }
    }
    if examples.is_empty() && issues.is_empty() {
        issues.push((0, "no examples".into()));
    }
    if !issues.is_empty() {
        issues.sort_by_key(|(l, _)| *l);
        return Err(issues_of(issues));
    }
    Ok(Dataset { path: path.to_path_buf(), hash, examples })
}

type Parsed = (Option<(usize, Vec<String>)>, Vec<(usize, Map<String, Value>)>, Vec<(usize, String)>);

fn read_tsv(text: &str) -> Result<Parsed, (usize, String)> {
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.strip_suffix('\r').unwrap_or(l)));
    let (header_line, header) =
        lines.find(|(_, l)| !l.trim().is_empty()).ok_or((0, "the file is empty".to_string()))?;
    let header: Vec<String> = header.split('\t').map(|h| h.trim().to_string()).collect();
    unique_columns(&header).map_err(|e| (header_line, e))?;
    let mut rows = Vec::new();
    let mut issues = Vec::new();
    for (line, content) in lines {
        if content.trim().is_empty() {
            continue;
        }
        // Split on the last tabs: extra tabs belong to the first column's text.
        let mut fields: Vec<&str> = content.rsplitn(header.len(), '\t').collect();
        fields.reverse();
        if fields.len() != header.len() {
            issues.push((
                line,
                format!(
                    "expected {} tab-separated columns ({}), found {}",
                    header.len(),
                    header.join(", "),
                    fields.len()
                ),
            ));
            continue;
        }
        let row = header.iter().cloned().zip(fields.into_iter().map(|f| Value::String(f.to_string()))).collect();
        rows.push((line, row));
    }
    Ok((Some((header_line, header)), rows, issues))
}

/// The 1-based line of the record at byte `start` of `text`, counted here: the csv crate's own
/// line numbers run short in a file with CRLF line ends (a record starting on line 3 said 2).
/// A record's start may fall on the line end before it; its first character is what counts.
fn record_line(text: &str, newlines: &[usize], start: u64) -> usize {
    let bytes = text.as_bytes();
    let mut at = usize::try_from(start).unwrap_or(bytes.len()).min(bytes.len());
    while matches!(bytes.get(at), Some(b'\r' | b'\n')) {
        at += 1;
    }
    newlines.partition_point(|&newline| newline < at) + 1
}

fn read_csv(text: &str) -> Result<Parsed, (usize, String)> {
    let newlines: Vec<usize> = text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i).collect();
    let line_of = |position: Option<&csv::Position>| position.map_or(0, |p| record_line(text, &newlines, p.byte()));
    let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| (1, format!("bad CSV header: {e}")))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    unique_columns(&header).map_err(|e| (1, e))?;
    let mut rows = Vec::new();
    let mut issues = Vec::new();
    for record in reader.records() {
        match record {
            Ok(record) => {
                let line = line_of(record.position());
                if record.len() != header.len() {
                    issues.push((
                        line,
                        format!(
                            "expected {} comma-separated columns ({}), found {}",
                            header.len(),
                            header.join(", "),
                            record.len()
                        ),
                    ));
                    continue;
                }
                rows.push((
                    line,
                    header.iter().cloned().zip(record.iter().map(|f| Value::String(f.to_string()))).collect(),
                ));
            }
            Err(e) => {
                let line = line_of(e.position());
                issues.push((line, format!("bad CSV: {e}")));
            }
        }
    }
    Ok((Some((1, header)), rows, issues))
}

/// A header naming a column twice would keep one of them silently.
fn unique_columns(header: &[String]) -> Result<(), String> {
    let mut seen = std::collections::HashSet::new();
    // Unnamed columns (a spreadsheet's trailing empty cells) are not read: they may repeat.
    match header.iter().filter(|h| !h.is_empty()).find(|h| !seen.insert(h.as_str())) {
        Some(twice) => Err(format!("the header names column `{twice}` twice")),
        None => Ok(()),
    }
}

/// One JSONL line: any JSON value, but an object may not name a field twice (JSON parsers
/// differ on which one wins; this one would keep the last silently).
struct Row(Value);

impl<'de> serde::Deserialize<'de> for Row {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Row;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Row, A::Error> {
                let mut map = Map::new();
                while let Some((key, value)) = access.next_entry::<String, Value>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!("the field `{key}` appears twice")));
                    }
                    map.insert(key, value);
                }
                Ok(Row(Value::Object(map)))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Row, E> {
                Ok(Row(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Row, E> {
                Ok(Row(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Row, E> {
                Ok(Row(Value::from(v)))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Row, E> {
                Ok(Row(Value::from(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Row, E> {
                Ok(Row(Value::String(v.to_string())))
            }
            fn visit_unit<E>(self) -> Result<Row, E> {
                Ok(Row(Value::Null))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut access: A) -> Result<Row, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = access.next_element::<Value>()? {
                    items.push(item);
                }
                Ok(Row(Value::Array(items)))
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

fn read_jsonl(text: &str) -> Result<Parsed, (usize, String)> {
    let mut rows = Vec::new();
    let mut issues = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Row>(line) {
            Ok(Row(Value::Object(map))) => rows.push((i + 1, map)),
            Ok(Row(other)) => {
                issues.push((i + 1, format!("each line must be a JSON object, not {}", crate::yaml::describe(&other))))
            }
            Err(e) => issues.push((i + 1, format!("invalid JSON: {e}"))),
        }
    }
    Ok((None, rows, issues))
}

/// A cell quoted in a message, cut to its first 40 characters: a sentence in the label
/// column (columns swapped) should not make every message a paragraph.
fn shortened(cell: &str) -> String {
    match cell.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &cell[..end]),
        None => cell.to_string(),
    }
}

/// `value` as one of the JSON Schema `types`: itself where it is of one; else a string read as
/// the first of them it spells (a TSV or CSV cell is text: `3` or `3.0` for an integer, `True`
/// for a boolean, `[1, 2]` for an array), so the template sees what a typed input would be
/// (`{{#if}}` on `false`, `{{#each}}` over a list); `None` where it is none of them.
fn as_type(value: &Value, types: &[String]) -> Option<Value> {
    let integral = |x: f64| x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e18;
    let is = |t: &String| match (t.as_str(), value) {
        ("string", Value::String(_))
        | ("number", Value::Number(_))
        | ("boolean", Value::Bool(_))
        | ("array", Value::Array(_))
        | ("object", Value::Object(_))
        | ("null", Value::Null) => true,
        ("integer", Value::Number(n)) => n.is_i64() || n.is_u64() || n.as_f64().is_some_and(integral),
        _ => false,
    };
    if types.iter().any(is) {
        return Some(value.clone());
    }
    let Value::String(text) = value else { return None };
    let text = text.trim();
    let whole = || text.parse::<i64>().ok().map(Value::from);
    types.iter().find_map(|t| match t.as_str() {
        "integer" => {
            whole().or_else(|| text.parse::<f64>().ok().filter(|x| integral(*x)).map(|x| Value::from(x as i64)))
        }
        "number" => {
            whole().or_else(|| text.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map(Value::Number))
        }
        "boolean" => ["false", "true"].iter().position(|b| text.eq_ignore_ascii_case(b)).map(|b| Value::Bool(b == 1)),
        "array" => serde_json::from_str::<Value>(text).ok().filter(Value::is_array),
        "object" => serde_json::from_str::<Value>(text).ok().filter(Value::is_object),
        _ => None,
    })
}

fn to_example(line: usize, row: &Map<String, Value>, spec: &DatasetSpec) -> Result<Example, String> {
    let mut input = Map::new();
    for variable in &spec.variables {
        let column = spec.column_of(variable);
        let optional = spec.optional.contains(variable);
        match row.get(column) {
            None | Some(Value::Null) if optional => {}
            Some(Value::String(s)) if optional && s.trim().is_empty() => {}
            None => return Err(format!("no `{column}` field (for `{{{{{variable}}}}}`)")),
            Some(Value::Null) => return Err(format!("`{column}` is empty")),
            Some(Value::String(s)) if s.trim().is_empty() => return Err(format!("`{column}` is empty")),
            Some(value) => {
                let typed = match spec.types.get(variable) {
                    None => value.clone(),
                    Some(types) => as_type(value, types).ok_or_else(|| {
                        let found = match value {
                            Value::String(s) => format!("`{}`", shortened(s)),
                            other => crate::yaml::describe(other).into_owned(),
                        };
                        format!(
                            "`{column}` is {found}, and the input schema declares {} for `{{{{{variable}}}}}`",
                            types.join(" or ")
                        )
                    })?,
                };
                input.insert(variable.clone(), typed);
            }
        }
    }
    let gold = row.get(spec.gold_column());
    let text = |v: &Value| match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    };
    match spec.task {
        Task::Classify => {
            let Some(value) = gold.filter(|v| !v.is_null() && !text(v).is_empty()) else {
                return Err(format!("no label in `{}`", spec.label_column));
            };
            let raw = text(value);
            // A label word wins over an id, so numeric label words (`[1, 2, 3]`) mean themselves;
            // the data's own names, where given, stand for the label words.
            let same = |w: &String| w.eq_ignore_ascii_case(&raw);
            let by_word = if spec.data_labels.is_empty() {
                spec.labels.iter().position(same).or_else(|| spec.label_words.iter().position(|g| g.iter().any(same)))
            } else {
                spec.data_labels.iter().position(|g| g.iter().any(same))
            };
            let label = by_word.or_else(|| raw.parse::<usize>().ok().filter(|id| *id < spec.labels.len()));
            match label {
                Some(label) => Ok(Example { line, input, label: Some(label), answer: None }),
                None => Err(format!(
                    "unknown label `{}`: expected an id 0..{} or one of {}{}",
                    shortened(&raw),
                    spec.labels.len().saturating_sub(1),
                    if spec.data_labels.is_empty() { spec.labels.clone() } else { spec.data_labels.concat() }
                        .join(", "),
                    if spec.data_labels.is_empty() { "" } else { " (`reprompt.data_labels`)" }
                )),
            }
        }
        Task::Generate => {
            let answer = gold.map(text).filter(|a| !a.is_empty());
            match answer {
                Some(answer) => Ok(Example { line, input, label: None, answer: Some(answer) }),
                None => Err(format!("no answer in `{}`", spec.answer_column)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(task: Task) -> DatasetSpec {
        DatasetSpec {
            variables: vec!["sentence".into()],
            optional: Vec::new(),
            columns: Map::new(),
            types: BTreeMap::new(),
            task,
            labels: vec!["terrible".into(), "great".into()],
            label_words: vec![vec!["terrible".into(), "awful".into()], vec!["great".into()]],
            data_labels: Vec::new(),
            label_column: "label".into(),
            answer_column: "answer".into(),
        }
    }

    fn write(name: &str, content: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("reprompt-dataset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn tsv_splits_on_the_last_tab_and_reads_quotes_literally() {
        let path = write("a.tsv", "sentence\tlabel\na \"quoted\"\ttab\t1\nplain\t0\n");
        let data = load(&path, &spec(Task::Classify)).unwrap();
        assert_eq!(data.examples.len(), 2);
        assert_eq!(data.examples[0].input["sentence"], "a \"quoted\"\ttab");
        assert_eq!(data.examples[0].label, Some(1));
        assert_eq!(data.examples[1].line, 3);
    }

    #[test]
    fn the_datas_own_label_names_stand_for_the_label_words() {
        let path = write("named.tsv", "sentence\tlabel\nugh\tbad\nyes\tGOOD\nthird\t1\nso so\tmeh\n");
        // Relabelled prompt, data as it was: read through `reprompt.data_labels`.
        let relabelled = DatasetSpec {
            labels: vec!["negative".into(), "positive".into()],
            label_words: vec![vec!["negative".into()], vec!["positive".into()]],
            data_labels: vec![vec!["bad".into(), "meh".into()], vec!["good".into()]],
            ..spec(Task::Classify)
        };
        let data = load(&path, &relabelled).unwrap();
        assert_eq!(data.examples.iter().map(|e| e.label).collect::<Vec<_>>(), [Some(0), Some(1), Some(1), Some(0)]);
        // Without them the data cannot be read, and by ids alone neither: it names its labels.
        let issues = load(&path, &DatasetSpec { data_labels: Vec::new(), ..relabelled.clone() }).unwrap_err();
        assert!(issues[0].message.contains("one of negative, positive"), "{}", issues[0]);
        assert!(load(&path, &relabelled.by_ids()).is_err());
        // The label words are not read where the data's names are given.
        let by_word = write("by-word.tsv", "sentence\tlabel\nmeh\tnegative\n");
        let issues = load(&by_word, &relabelled).unwrap_err();
        assert!(issues[0].message.contains("one of bad, meh, good (`reprompt.data_labels`)"), "{}", issues[0]);
        // Data by id reads the same by ids alone.
        let by_id = write("by-id.tsv", "sentence\tlabel\nmeh\t0\nyes\t1\n");
        assert_eq!(load(&by_id, &spec(Task::Classify)).unwrap(), load(&by_id, &spec(Task::Classify).by_ids()).unwrap());
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let path = write("bad.tsv", "sentence\tlabel\ngood\t1\nno label here\n \t0\nfine\t7\nok\tgreat\n");
        let issues = load(&path, &spec(Task::Classify)).unwrap_err();
        let lines: Vec<usize> = issues.iter().map(|i| i.line).collect();
        assert_eq!(lines, [3, 4, 5], "{issues:?}");
        assert!(issues[2].message.contains("unknown label `7`"), "{}", issues[2]);
        // CSV with CRLF line ends and a quoted line end inside a record: lines as an editor counts them.
        let path =
            write("crlf.csv", "\u{feff}sentence,label\r\n\"two\r\nlines\",1\r\nfine,0\r\nbad,7\r\n\r\nlast,1\r\n");
        let issues = load(&path, &spec(Task::Classify)).unwrap_err();
        assert_eq!(issues.iter().map(|i| i.line).collect::<Vec<_>>(), [5], "{issues:?}");
        std::fs::write(&path, "sentence,label\r\n\"two\r\nlines\",1\r\nfine,0\r\n\r\nlast,1").unwrap();
        let lines: Vec<usize> = load(&path, &spec(Task::Classify)).unwrap().examples.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 4, 6]);
        // Columns swapped: the sentence is quoted cut short, not whole.
        let long = "a long and winding review of a film that goes on and on for ever";
        let path = write("swapped.csv", &format!("label,sentence\n\"{long}\",1\n"));
        let issues = load(&path, &spec(Task::Classify)).unwrap_err();
        let expected = format!("unknown label `{}…`", long.chars().take(40).collect::<String>());
        assert!(issues[0].message.contains(&expected), "{}", issues[0]);
    }

    #[test]
    fn label_words_win_over_ids_and_optional_inputs_may_be_missing() {
        let mut numeric = spec(Task::Classify);
        numeric.labels = vec!["1".into(), "2".into(), "3".into()];
        numeric.variables.push("note".into());
        numeric.optional.push("note".into());
        let path = write("n.tsv", "\u{feff}sentence\tlabel\nbad\t1\ngood\t3\n");
        let data = load(&path, &numeric).unwrap();
        assert_eq!(data.examples.iter().map(|e| e.label).collect::<Vec<_>>(), [Some(0), Some(2)]);
        assert!(!data.examples[0].input.contains_key("note"));
        // A label's other words name it too.
        let path = write("w.tsv", "sentence\tlabel\nbad\tAwful\ngood\tgreat\n");
        let data = load(&path, &spec(Task::Classify)).unwrap();
        assert_eq!(data.examples.iter().map(|e| e.label).collect::<Vec<_>>(), [Some(0), Some(1)]);
    }

    #[test]
    fn a_field_named_twice_is_an_error_not_a_silent_choice() {
        let path = write(
            "dup.jsonl",
            "{\"sentence\": \"a\", \"sentence\": \"b\", \"label\": 1}\n{\"sentence\": \"c\", \"label\": 0}\n",
        );
        let issues = load(&path, &spec(Task::Classify)).unwrap_err();
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert!(issues[0].line == 1 && issues[0].message.contains("`sentence` appears twice"), "{}", issues[0]);
        for (name, text) in
            [("dup.tsv", "sentence\tsentence\tlabel\na\tb\t1\n"), ("dup.csv", "sentence,label,sentence\na,1,b\n")]
        {
            let issues = load(&write(name, text), &spec(Task::Classify)).unwrap_err();
            assert!(issues[0].message.contains("column `sentence` twice"), "{name}: {issues:?}");
        }
        // Unnamed columns may repeat.
        let path = write("blank.csv", "sentence,label,,\na,1,,\n");
        assert_eq!(load(&path, &spec(Task::Classify)).unwrap().examples.len(), 1);
        // Nested values and other lines read as before.
        let path = write("ok.jsonl", "{\"sentence\": \"a\", \"label\": 1, \"meta\": {\"x\": [1, 2.5, null, true]}}\n");
        assert_eq!(load(&path, &spec(Task::Classify)).unwrap().examples.len(), 1);
    }

    #[test]
    fn jsonl_and_csv_load_with_their_errors() {
        let path = write("g.jsonl", "{\"sentence\": \"2+2?\", \"answer\": \"#### 4\"}\n{not json}\n[1]\n");
        let issues = load(&path, &spec(Task::Generate)).unwrap_err();
        assert_eq!(issues.iter().map(|i| i.line).collect::<Vec<_>>(), [2, 3]);
        let path = write("c.csv", "sentence,label\n\"a, quoted\",great\nb,0\n");
        let data = load(&path, &spec(Task::Classify)).unwrap();
        assert_eq!(data.examples[0].input["sentence"], "a, quoted");
        assert_eq!(data.examples[0].label, Some(1));
        let path = write("m.csv", "text,label\nx,0\n");
        let issues = load(&path, &spec(Task::Classify)).unwrap_err();
        assert!(issues[0].message.contains("missing column `sentence`"), "{}", issues[0]);
    }

    #[test]
    fn a_copy_of_an_input_cased_spaced_or_punctuated_otherwise_is_shared() {
        let train = load(
            &write("shared-train.tsv", "sentence\tlabel\nIt's a great movie!\t1\n?!\t0\nplain\t0\n"),
            &spec(Task::Classify),
        )
        .unwrap();
        let test = load(
            &write("shared-test.tsv", "sentence\tlabel\nit 's a GREAT movie .\t0\n...\t1\nplainer\t1\n?!\t1\n"),
            &spec(Task::Classify),
        )
        .unwrap();
        // The tokenized copy under another label is the same input; `...` is not `?!`.
        assert_eq!(shared_inputs(&train, &test), [(2, 2), (5, 3)]);
        assert_eq!(folded(&serde_json::json!({"a": ["Ab C", 1]})), serde_json::json!({"a": ["abc", 1]}));
    }

    #[test]
    fn values_of_a_type_the_input_schema_does_not_declare_are_bad_rows() {
        let doc = crate::parse(
            "---\ninput:\n  schema:\n    question: string\n    count: integer\n    note?: string\n\
             reprompt.task: generate\n---\n{{question}} {{count}} {{note}}",
            None,
        );
        let spec = DatasetSpec::for_document(&doc);
        assert_eq!(spec.types["count"], ["integer"]);
        assert_eq!(spec.types["note"], ["string", "null"]);
        let rows = [
            r#"{"question": "2+2?", "count": 3, "note": null, "answer": "4"}"#,
            r#"{"question": {"text": "2+2?"}, "count": 3, "answer": "4"}"#,
            r#"{"question": ["2+2?"], "count": 3, "answer": "4"}"#,
            r#"{"question": 4, "count": 3, "answer": "4"}"#,
            r#"{"question": "2+2?", "count": 2.5, "answer": "4"}"#,
            r#"{"question": "2+2?", "count": "three", "answer": "4"}"#,
            r#"{"question": "2+2?", "count": 3.0, "note": 1, "answer": "4"}"#,
        ];
        let issues = load(&write("typed.jsonl", &(rows.join("\n") + "\n")), &spec).unwrap_err();
        let found: Vec<(usize, &str)> = issues.iter().map(|i| (i.line, i.message.as_str())).collect();
        assert_eq!(
            found,
            [
                (2, "`question` is a mapping, and the input schema declares string for `{{question}}`"),
                (3, "`question` is a list, and the input schema declares string for `{{question}}`"),
                (4, "`question` is a number, and the input schema declares string for `{{question}}`"),
                (5, "`count` is a number, and the input schema declares integer for `{{count}}`"),
                (6, "`count` is `three`, and the input schema declares integer for `{{count}}`"),
                (7, "`note` is a number, and the input schema declares string or null for `{{note}}`"),
            ]
        );
        // A text cell is read as the type it spells.
        let data = load(&write("typed.tsv", "question\tcount\tanswer\n2+2?\t3\t4\n2+2?\t3.0\t4\n"), &spec).unwrap();
        assert_eq!(data.examples[0].input["count"], 3);
        assert_eq!(data.examples[1].input["count"], 3);
        let issues = load(&write("typed.csv", "question,count,answer\n2+2?,3,4\n2+2?,3.5,4\n"), &spec).unwrap_err();
        assert_eq!(issues.iter().map(|i| i.line).collect::<Vec<_>>(), [3]);
        // Read as the value a typed input would be: `False` is false to `{{#if}}`.
        let cell = |text: &str, ty: &str| as_type(&Value::String(text.into()), &[ty.to_string()]);
        assert_eq!(cell("False", "boolean"), Some(Value::Bool(false)));
        assert_eq!(cell(" [1, 2]", "array"), Some(serde_json::json!([1, 2])));
        assert_eq!(cell("{\"a\": 1}", "object"), Some(serde_json::json!({"a": 1})));
        assert_eq!(cell("2.5", "number"), Some(serde_json::json!(2.5)));
        assert_eq!(cell("7", "string"), Some(Value::String("7".into())));
        for (text, ty) in
            [("yes", "boolean"), ("[1, 2", "array"), ("[1]", "object"), ("nan", "number"), ("1e30", "integer")]
        {
            assert_eq!(cell(text, ty), None, "{text} as {ty}");
        }
        // An optional object of any fields compiles to `[null, "null"]`: no constraint.
        let doc = crate::parse("---\ninput:\n  schema:\n    x?(object): any\n---\n{{x}}", None);
        assert!(DatasetSpec::for_document(&doc).types.is_empty(), "{:?}", DatasetSpec::for_document(&doc).types);
    }
}
