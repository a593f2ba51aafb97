//! The deployable artefacts agree with the code, checked on every run and
//! derived from the files themselves (nothing here lists today's functions,
//! routes or parameters):
//!
//! - every function crate under `functions/` is built by `template.yaml`
//!   (`Metadata.BuildProperties.Binary`), and every function of the template
//!   names such a crate;
//! - every route of the router's table ([`switchboard::openapi::ROUTES`]) is
//!   routed by an `HttpApi` (or `Api`) event of the template, and every such
//!   event routes at least one of them;
//! - README names every template parameter, so a deployer never has to open
//!   the template.
//!
//! The template is read with `saphyr`, which keeps CloudFormation's
//! short-form tags (`!Ref`, `!Sub`, `!If`, `!GetAtt`, …) as tagged nodes;
//! [`to_json`] rewrites them into their long form (`{"Ref": …}`,
//! `{"Fn::Sub": …}`), as CloudFormation reads them, and refuses a tag it does
//! not know instead of dropping it.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use saphyr::{LoadableYamlNode, ScalarOwned, YamlOwned};
use serde_json::{Map, Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace root").to_path_buf()
}

// ---------------------------------------------------------------------------
// YAML with CloudFormation tags → JSON in CloudFormation's long form.

/// The short-form tags CloudFormation accepts and the long-form key of each.
fn long_form(tag: &str) -> Option<&'static str> {
    Some(match tag {
        "Ref" => "Ref",
        "Condition" => "Condition",
        "GetAtt" => "Fn::GetAtt",
        "Sub" => "Fn::Sub",
        "If" => "Fn::If",
        "Not" => "Fn::Not",
        "And" => "Fn::And",
        "Or" => "Fn::Or",
        "Equals" => "Fn::Equals",
        "Join" => "Fn::Join",
        "Select" => "Fn::Select",
        "Split" => "Fn::Split",
        "FindInMap" => "Fn::FindInMap",
        "GetAZs" => "Fn::GetAZs",
        "ImportValue" => "Fn::ImportValue",
        "Base64" => "Fn::Base64",
        "Cidr" => "Fn::Cidr",
        "Length" => "Fn::Length",
        "ToJsonString" => "Fn::ToJsonString",
        "Transform" => "Fn::Transform",
        _ => return None,
    })
}

/// One YAML document as JSON, CloudFormation's short-form tags in long form.
/// Panics (the test fails) on an unknown tag, an alias or a bad scalar, naming it.
fn to_json(node: &YamlOwned) -> Value {
    match node {
        YamlOwned::Value(scalar) => match scalar {
            ScalarOwned::Null => Value::Null,
            ScalarOwned::Boolean(b) => json!(b),
            ScalarOwned::Integer(i) => json!(i),
            ScalarOwned::FloatingPoint(f) => json!(f.into_inner()),
            ScalarOwned::String(s) => json!(s),
        },
        YamlOwned::Representation(raw, ..) => json!(raw),
        YamlOwned::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        YamlOwned::Mapping(entries) => {
            let mut map = Map::new();
            for (key, value) in entries {
                let key = match to_json(key) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                map.insert(key, to_json(value));
            }
            Value::Object(map)
        }
        YamlOwned::Tagged(tag, inner) => {
            let name = tag.suffix.as_str();
            let Some(key) = long_form(name).filter(|_| tag.handle == "!") else {
                panic!("unknown YAML tag {}{} in the template", tag.handle, tag.suffix);
            };
            let mut value = to_json(inner);
            // `!GetAtt Resource.Attribute` is the one short form whose scalar
            // becomes a list in the long form.
            if name == "GetAtt"
                && let Value::String(s) = &value
                && let Some((resource, attribute)) = s.split_once('.')
            {
                value = json!([resource, attribute]);
            }
            json!({ key: value })
        }
        YamlOwned::Alias(_) => panic!("YAML aliases are not used by CloudFormation templates"),
        YamlOwned::BadValue => panic!("a YAML value that does not parse as its type"),
    }
}

fn parse_yaml(text: &str) -> Value {
    let docs = YamlOwned::load_from_str(text).unwrap_or_else(|e| panic!("template.yaml is not YAML: {e}"));
    assert_eq!(docs.len(), 1, "one YAML document expected");
    to_json(&docs[0])
}

fn template() -> Value {
    let text = fs::read_to_string(root().join("template.yaml")).expect("template.yaml is readable");
    parse_yaml(&text)
}

#[test]
fn short_form_tags_are_read_in_their_long_form() {
    let doc = parse_yaml(
        r#"
A: !Ref Param
B: !GetAtt Fn.Arn
C: !Sub "arn:${AWS::Partition}:x"
D: !Sub ["${a}-${b}", {a: !Ref X, b: !GetAtt [Y, Z]}]
E: !If [HasThing, !Ref Thing, !Ref AWS::NoValue]
F: !Not [!Equals [!Ref P, ""]]
G: [!Ref One, plain, 3, true]
H: !Join
  - ","
  - - !Ref SubnetA
    - !Ref SubnetB
I: !Condition IsProd
J: "!Ref is text when quoted"
"#,
    );
    assert_eq!(
        doc,
        json!({
            "A": {"Ref": "Param"},
            "B": {"Fn::GetAtt": ["Fn", "Arn"]},
            "C": {"Fn::Sub": "arn:${AWS::Partition}:x"},
            "D": {"Fn::Sub": ["${a}-${b}", {"a": {"Ref": "X"}, "b": {"Fn::GetAtt": ["Y", "Z"]}}]},
            "E": {"Fn::If": ["HasThing", {"Ref": "Thing"}, {"Ref": "AWS::NoValue"}]},
            "F": {"Fn::Not": [{"Fn::Equals": [{"Ref": "P"}, ""]}]},
            "G": [{"Ref": "One"}, "plain", 3, true],
            "H": {"Fn::Join": [",", [{"Ref": "SubnetA"}, {"Ref": "SubnetB"}]]},
            "I": {"Condition": "IsProd"},
            "J": "!Ref is text when quoted",
        })
    );
}

#[test]
#[should_panic(expected = "unknown YAML tag !Reff")]
fn an_unknown_tag_fails_the_check_rather_than_vanishing() {
    parse_yaml("A: !Reff Param\n");
}

// ---------------------------------------------------------------------------
// Function crates ↔ template functions.

/// The binaries of each workspace package under `functions/`, by its
/// directory, from `cargo metadata` (a renamed `[[bin]]` counts as renamed).
fn function_crates() -> BTreeMap<String, Vec<String>> {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "cargo metadata: {}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
    let functions_dir = root().join("functions");
    let mut crates = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let manifest = Path::new(package["manifest_path"].as_str().expect("manifest_path"));
        let Ok(relative) = manifest.strip_prefix(&functions_dir) else { continue };
        let dir = relative.components().next().expect("a directory").as_os_str().to_string_lossy().into_owned();
        let binaries = package["targets"]
            .as_array()
            .expect("targets")
            .iter()
            .filter(|target| target["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "bin")))
            .map(|target| target["name"].as_str().expect("a target name").to_string())
            .collect();
        crates.insert(dir, binaries);
    }
    crates
}

/// Every directory under `functions/` holding a manifest, workspace member
/// or not (`cargo metadata` sees only members).
fn function_dirs() -> BTreeSet<String> {
    fs::read_dir(root().join("functions"))
        .expect("functions/ is readable")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.join("Cargo.toml").is_file())
        .map(|path| path.file_name().expect("a name").to_string_lossy().into_owned())
        .collect()
}

/// `(logical id, resource)` of every resource of `type_`.
fn resources<'a>(template: &'a Value, type_: &str) -> Vec<(&'a str, &'a Value)> {
    template["Resources"]
        .as_object()
        .expect("the template has Resources")
        .iter()
        .filter(|(_, resource)| resource["Type"] == type_)
        .map(|(id, resource)| (id.as_str(), resource))
        .collect()
}

#[test]
fn every_function_crate_is_in_the_template_and_every_template_function_has_a_crate() {
    let template = template();
    let crates = function_crates();
    for dir in function_dirs() {
        let binaries = crates.get(&dir);
        assert!(binaries.is_some(), "functions/{dir} is not a workspace member (add it to Cargo.toml's members)");
        assert!(binaries.is_some_and(|b| !b.is_empty()), "functions/{dir} has no binary");
    }
    let binaries: BTreeSet<&str> = crates.values().flatten().map(String::as_str).collect();
    assert!(!binaries.is_empty(), "no function crate found under functions/");
    let mut built = BTreeMap::new();
    for (id, function) in resources(&template, "AWS::Serverless::Function") {
        let binary = function["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap_or_else(|| {
            panic!("{id} has no literal Metadata.BuildProperties.Binary naming its crate under functions/")
        });
        assert_eq!(
            function["Metadata"]["BuildMethod"], "rust-cargolambda",
            "{id} builds {binary} with something other than rust-cargolambda"
        );
        assert!(
            binaries.contains(binary),
            "{id} builds binary {binary}, which no crate under functions/ has (they have {binaries:?})"
        );
        if let Some(other) = built.insert(binary, id) {
            panic!("{other} and {id} both build {binary}");
        }
    }
    for binary in &binaries {
        assert!(built.contains_key(binary), "functions/ binary {binary} is not built by any template function");
    }
}

// ---------------------------------------------------------------------------
// Router routes ↔ template events.

/// A template route: `(method, path, where)`.
type TemplateRoute = (String, String, String);

fn template_routes(template: &Value) -> Vec<TemplateRoute> {
    let mut routes = Vec::new();
    for (id, function) in resources(template, "AWS::Serverless::Function") {
        let Some(events) = function["Properties"]["Events"].as_object() else { continue };
        for (name, event) in events {
            if event["Type"] != "HttpApi" && event["Type"] != "Api" {
                continue;
            }
            let place = format!("{id}.Events.{name}");
            let props = &event["Properties"];
            // An HttpApi event without a path is the API's `$default` route.
            let path = match &props["Path"] {
                Value::Null => "$default",
                Value::String(path) => path,
                other => panic!("{place}: Path must be a literal for this check, found {other}"),
            };
            let method = match &props["Method"] {
                Value::Null => "ANY",
                Value::String(method) => method,
                other => panic!("{place}: Method must be a literal for this check, found {other}"),
            };
            routes.push((method.to_ascii_uppercase(), path.to_string(), place));
        }
    }
    routes
}

/// Whether a template route (method and path as API Gateway reads them:
/// `ANY`, `{param}`, a final `{proxy+}`, `$default`) sends a request for the
/// router's `(method, path)` (whose `{id}` segments stand for any value) to
/// the function. A template literal never covers a router parameter.
fn routes(template_method: &str, template_path: &str, method: &str, path: &str) -> bool {
    if template_path == "$default" {
        return true;
    }
    if template_method != "ANY" && !template_method.eq_ignore_ascii_case(method) {
        return false;
    }
    let wanted: Vec<&str> = path.trim_matches('/').split('/').collect();
    let given: Vec<&str> = template_path.trim_matches('/').split('/').collect();
    for (i, segment) in given.iter().enumerate() {
        let is_param = segment.starts_with('{') && segment.ends_with('}');
        if is_param && segment.ends_with("+}") {
            // Greedy: one or more remaining segments, and it must be last.
            return i + 1 == given.len() && wanted.len() > i;
        }
        let Some(want) = wanted.get(i) else { return false };
        let want_is_param = want.starts_with('{') && want.ends_with('}');
        if !(is_param || (!want_is_param && want == segment)) {
            return false;
        }
    }
    given.len() == wanted.len()
}

#[test]
fn route_matching_follows_api_gateway() {
    assert!(routes("POST", "/a/{id}/b", "POST", "/a/{id}/b"));
    assert!(routes("POST", "/a/{conversation}/b", "POST", "/a/{id}/b"));
    assert!(routes("ANY", "/a/{id}", "DELETE", "/a/{id}"));
    assert!(routes("post", "/a", "POST", "/a"));
    assert!(routes("ANY", "/api/cache/{proxy+}", "GET", "/api/cache/health"));
    assert!(routes("ANY", "/api/cache/{proxy+}", "POST", "/api/cache/a/b"));
    assert!(routes("GET", "$default", "POST", "/anything"));
    assert!(!routes("ANY", "/api/cache/{proxy+}", "GET", "/api/cache"));
    assert!(!routes("GET", "/a", "POST", "/a"));
    assert!(!routes("POST", "/a/b", "POST", "/a/{id}"), "a literal does not cover every id");
    assert!(!routes("POST", "/a", "POST", "/a/b"));
    assert!(!routes("POST", "/a/b", "POST", "/a"));
}

#[test]
fn every_router_route_is_routed_by_the_template_and_every_template_route_reaches_the_router() {
    let template = template();
    let template_routes = template_routes(&template);
    assert!(!template_routes.is_empty(), "the template routes nothing");
    let router = switchboard::openapi::ROUTES;
    for (method, path) in router {
        assert!(
            template_routes.iter().any(|(m, p, _)| routes(m, p, method, path)),
            "{method} {path} is served by the router but no HttpApi event of template.yaml routes it"
        );
    }
    for (m, p, place) in &template_routes {
        assert!(
            router.iter().any(|(method, path)| routes(m, p, method, path)),
            "{place} routes {m} {p}, which the router does not serve"
        );
    }
}

// ---------------------------------------------------------------------------
// README ↔ template parameters.

/// Whether `word` occurs in `text` delimited by non-identifier characters.
fn names(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
    })
}

#[test]
fn readme_names_every_template_parameter() {
    let template = template();
    let readme = fs::read_to_string(root().join("README.md")).expect("README.md is readable");
    let parameters = template["Parameters"].as_object().map(|p| p.keys().cloned().collect::<Vec<_>>());
    let missing: Vec<String> =
        parameters.unwrap_or_default().into_iter().filter(|name| !names(&readme, name)).collect();
    assert!(missing.is_empty(), "README does not name these template parameters: {missing:?}");
}

#[test]
fn a_parameter_is_named_only_as_a_whole_word() {
    assert!(names("set `RedisUrl` to", "RedisUrl"));
    assert!(names("RedisUrl", "RedisUrl"));
    assert!(!names("RedisUrlTls only", "RedisUrl"));
    assert!(!names("MyRedisUrl", "RedisUrl"));
}
