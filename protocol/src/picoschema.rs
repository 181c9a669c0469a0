//! Picoschema → JSON Schema, as the Dotprompt reference implementation compiles it.
//!
//! `field: type, description`, `field?: type` (optional and nullable), `field(array, desc):`,
//! `field(object, desc):`, `field(enum, desc): [A, B]`, `(*): type` for additional properties,
//! named schemas resolved by the host, and plain JSON Schema passed through.

use serde_json::{Map, Value, json};

const SCALARS: &[&str] = &["any", "boolean", "integer", "null", "number", "string"];
const WILDCARD: &str = "(*)";

/// A schema that does not compile; `path` is the chain of mapping keys that leads to the fault.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaError {
    pub path: Vec<String>,
    pub message: String,
}

/// Resolves a named schema (`schema: Foo`).
pub trait SchemaResolver {
    fn resolve(&self, name: &str) -> Option<Value>;
}

impl<F: Fn(&str) -> Option<Value>> SchemaResolver for F {
    fn resolve(&self, name: &str) -> Option<Value> {
        self(name)
    }
}

/// No named schemas.
pub struct NoSchemas;

impl SchemaResolver for NoSchemas {
    fn resolve(&self, _: &str) -> Option<Value> {
        None
    }
}

/// Compiles a Picoschema (or passes a JSON Schema through). `null` compiles to `None`.
pub fn compile(schema: &Value, resolver: &dyn SchemaResolver) -> Result<Option<Value>, SchemaError> {
    match schema {
        Value::Null => Ok(None),
        Value::Bool(false) => Ok(None),
        Value::String(text) => {
            let (ty, description) = split_description(text);
            if SCALARS.contains(&ty) {
                let mut out = Map::new();
                out.insert("type".into(), json!(ty));
                if let Some(d) = description {
                    out.insert("description".into(), json!(d));
                }
                return Ok(Some(Value::Object(out)));
            }
            Ok(Some(with_description(resolve(ty, resolver, &[])?, description)))
        }
        Value::Object(map) => {
            let ty = map.get("type").and_then(Value::as_str);
            if ty.is_some_and(|t| SCALARS.contains(&t) || t == "object" || t == "array") {
                return Ok(Some(schema.clone()));
            }
            if map.get("properties").is_some_and(Value::is_object) {
                let mut out = map.clone();
                out.insert("type".into(), json!("object"));
                return Ok(Some(Value::Object(out)));
            }
            parse_pico(schema, resolver, &mut Vec::new()).map(Some)
        }
        other => Err(SchemaError {
            path: Vec::new(),
            message: format!("a schema must be a type name or a mapping, not {other}"),
        }),
    }
}

fn resolve(name: &str, resolver: &dyn SchemaResolver, path: &[String]) -> Result<Value, SchemaError> {
    resolver.resolve(name).ok_or_else(|| SchemaError {
        path: path.to_vec(),
        message: format!(
            "unknown type `{name}`: use one of {} or a named schema",
            SCALARS.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(", ")
        ),
    })
}

fn with_description(mut schema: Value, description: Option<&str>) -> Value {
    if let (Some(d), Value::Object(map)) = (description, &mut schema) {
        map.insert("description".into(), json!(d));
    }
    schema
}

fn split_description(text: &str) -> (&str, Option<&str>) {
    match text.split_once(',') {
        Some((ty, description)) => (ty, Some(description.trim_start_matches(' '))),
        None => (text, None),
    }
}

fn parse_pico(value: &Value, resolver: &dyn SchemaResolver, path: &mut Vec<String>) -> Result<Value, SchemaError> {
    if let Value::String(text) = value {
        let (ty, description) = split_description(text);
        if !SCALARS.contains(&ty) {
            return Ok(with_description(resolve(ty, resolver, path)?, description));
        }
        let mut out = Map::new();
        if ty != "any" {
            out.insert("type".into(), json!(ty));
        }
        if let Some(d) = description {
            out.insert("description".into(), json!(d));
        }
        return Ok(Value::Object(out));
    }
    let Value::Object(map) = value else {
        return Err(SchemaError {
            path: path.clone(),
            message: format!("Picoschema consists of mappings and type strings, not {value}"),
        });
    };
    let mut properties = Map::new();
    let mut required = Vec::new();
    let mut additional = Value::Bool(false);
    for (key, field) in map {
        path.push(key.clone());
        if key == WILDCARD {
            additional = parse_pico(field, resolver, path)?;
            path.pop();
            continue;
        }
        let (name, type_info) = match key.split_once('(') {
            Some((name, info)) => (name, Some(info)),
            None => (key.as_str(), None),
        };
        let optional = name.ends_with('?');
        let property = name.strip_suffix('?').unwrap_or(name).to_string();
        if !optional {
            required.push(json!(property));
        }
        let Some(info) = type_info else {
            let mut prop = parse_pico(field, resolver, path)?;
            if optional && let Some(Value::String(ty)) = prop.get("type").cloned() {
                prop["type"] = json!([ty, "null"]);
            }
            properties.insert(property, prop);
            path.pop();
            continue;
        };
        let Some(info) = info.strip_suffix(')') else {
            return Err(SchemaError {
                path: path.clone(),
                message: format!("`{key}`: the `(` is not closed with `)`"),
            });
        };
        let (ty, description) = split_description(info);
        let mut prop = match ty {
            "array" => json!({
                "type": if optional { json!(["array", "null"]) } else { json!("array") },
                "items": parse_pico(field, resolver, path)?,
            }),
            "object" => {
                let mut prop = parse_pico(field, resolver, path)?;
                if optional {
                    let ty = prop.get("type").cloned().unwrap_or(Value::Null);
                    prop["type"] = json!([ty, "null"]);
                }
                prop
            }
            "enum" => {
                let Value::Array(values) = field else {
                    return Err(SchemaError {
                        path: path.clone(),
                        message: format!("`{key}`: an enum needs a list of values"),
                    });
                };
                let mut values = values.clone();
                if optional && !values.contains(&Value::Null) {
                    values.push(Value::Null);
                }
                json!({ "enum": values })
            }
            other => {
                return Err(SchemaError {
                    path: path.clone(),
                    message: format!("`{key}`: parenthetical types must be `object`, `array` or `enum`, not `{other}`"),
                });
            }
        };
        if let (Some(d), Value::Object(map)) = (description, &mut prop) {
            map.insert("description".into(), json!(d));
        }
        properties.insert(property, prop);
        path.pop();
    }
    let mut out = Map::new();
    out.insert("type".into(), json!("object"));
    out.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        out.insert("required".into(), Value::Array(required));
    }
    out.insert("additionalProperties".into(), additional);
    Ok(Value::Object(out))
}

/// Property names of an object schema (compiled), for variable checks.
pub fn property_names(schema: &Value) -> Option<Vec<String>> {
    let properties = schema.get("properties")?.as_object()?;
    Some(properties.keys().cloned().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_fields_optionals_and_descriptions() {
        let schema = json!({"name": "string, who", "age?": "integer", "tags(array)": "string"});
        let out = compile(&schema, &NoSchemas).unwrap().unwrap();
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {
                    "name": {"type": "string", "description": "who"},
                    "age": {"type": ["integer", "null"]},
                    "tags": {"type": "array", "items": {"type": "string"}},
                },
                "required": ["name", "tags"],
                "additionalProperties": false,
            })
        );
    }

    #[test]
    fn unknown_types_name_the_path() {
        let err = compile(&json!({"outer(object)": {"inner": "strnig"}}), &NoSchemas).unwrap_err();
        assert_eq!(err.path, ["outer(object)", "inner"]);
        assert!(err.message.contains("strnig"));
    }
}
