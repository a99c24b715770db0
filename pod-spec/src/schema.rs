//! The field schema of the Pod model, derived from the Rust structs (schemars), plus the
//! peapod rules about Kubernetes fields the model does not carry.
//!
//! Unknown-field detection (`check`) and `peapod explain` (`explain`) both read this one table.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::Pod;

/// The shape of a field's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shape {
    /// A string.
    String,
    /// An integer.
    Integer,
    /// A boolean.
    Boolean,
    /// A Kubernetes quantity (string or number).
    Quantity,
    /// A list.
    Array(Box<Shape>),
    /// A map with string keys.
    Map(Box<Shape>),
    /// A named object type of the model.
    Object(String),
}

impl Shape {
    /// The type as `kubectl explain` writes it: `string`, `[]Container`, `map[string]string`.
    pub fn display(&self) -> String {
        match self {
            Shape::String => "string".to_string(),
            Shape::Integer => "integer".to_string(),
            Shape::Boolean => "boolean".to_string(),
            Shape::Quantity => "Quantity".to_string(),
            Shape::Array(inner) => format!("[]{}", inner.display()),
            Shape::Map(inner) => format!("map[string]{}", inner.display()),
            Shape::Object(name) => name.clone(),
        }
    }
}

/// One field of an object type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The JSON/YAML name (`imagePullPolicy`).
    pub name: String,
    /// Its shape.
    pub shape: Shape,
    /// The description (the doc comment of the Rust field).
    pub description: String,
    /// Whether Kubernetes marks the field required.
    pub required: bool,
}

/// An object type of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectType {
    /// The type name (`Container`).
    pub name: String,
    /// Its description (the doc comment of the Rust struct).
    pub description: String,
    /// Its fields, sorted by name.
    pub fields: Vec<Field>,
}

impl ObjectType {
    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

/// Kubernetes fields of an object type that the peapod model does not carry.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// The object type these rules are for.
    pub type_name: &'static str,
    /// Fields that change behaviour and that peapod does not implement: an error naming the
    /// field (an empty value, such as `securityContext: {}` or `hostNetwork: false`, is
    /// accepted with a warning because it asks for nothing).
    pub unsupported: &'static [&'static str],
    /// Informational or cluster-only fields: accepted, dropped, and reported as a warning.
    pub informational: &'static [&'static str],
}

/// The rules for every object type. docs/pod-spec.md lists the same fields.
pub const RULES: &[Rules] = &[
    Rules {
        type_name: "Pod",
        unsupported: &[],
        informational: &["status"],
    },
    Rules {
        type_name: "ObjectMeta",
        unsupported: &[],
        informational: &[
            "creationTimestamp",
            "deletionGracePeriodSeconds",
            "deletionTimestamp",
            "finalizers",
            "generation",
            "managedFields",
            "ownerReferences",
            "resourceVersion",
            "selfLink",
        ],
    },
    Rules {
        type_name: "PodSpec",
        unsupported: &[
            "affinity",
            "dnsConfig",
            "ephemeralContainers",
            "hostAliases",
            "hostIPC",
            "hostNetwork",
            "hostPID",
            "hostUsers",
            "imagePullSecrets",
            "nodeSelector",
            "os",
            "overhead",
            "readinessGates",
            "resourceClaims",
            "resources",
            "runtimeClassName",
            "schedulingGates",
            "securityContext",
            "setHostnameAsFQDN",
            "topologySpreadConstraints",
        ],
        informational: &[
            "automountServiceAccountToken",
            "dnsPolicy",
            "enableServiceLinks",
            "nodeName",
            "preemptionPolicy",
            "priority",
            "priorityClassName",
            "schedulerName",
            "serviceAccount",
            "serviceAccountName",
            "tolerations",
        ],
    },
    Rules {
        type_name: "Container",
        unsupported: &[
            "envFrom",
            "lifecycle",
            "livenessProbe",
            "readinessProbe",
            "resizePolicy",
            "restartPolicy",
            "securityContext",
            "startupProbe",
            "stdinOnce",
            "volumeDevices",
        ],
        informational: &["terminationMessagePath", "terminationMessagePolicy"],
    },
    Rules {
        type_name: "EnvVarSource",
        unsupported: &[
            "configMapKeyRef",
            "fileKeyRef",
            "resourceFieldRef",
            "secretKeyRef",
        ],
        informational: &[],
    },
    Rules {
        type_name: "ContainerPort",
        unsupported: &["hostIP"],
        informational: &[],
    },
    Rules {
        type_name: "ResourceRequirements",
        unsupported: &["claims"],
        informational: &[],
    },
    Rules {
        type_name: "VolumeMount",
        unsupported: &["mountPropagation", "recursiveReadOnly", "subPathExpr"],
        informational: &[],
    },
    Rules {
        type_name: "Volume",
        unsupported: &[
            "awsElasticBlockStore",
            "azureDisk",
            "azureFile",
            "cephfs",
            "cinder",
            "configMap",
            "csi",
            "downwardAPI",
            "ephemeral",
            "fc",
            "flexVolume",
            "flocker",
            "gcePersistentDisk",
            "gitRepo",
            "glusterfs",
            "image",
            "iscsi",
            "nfs",
            "persistentVolumeClaim",
            "photonPersistentDisk",
            "portworxVolume",
            "projected",
            "quobyte",
            "rbd",
            "scaleIO",
            "secret",
            "storageos",
            "vsphereVolume",
        ],
        informational: &[],
    },
];

/// The rules for `type_name` (empty when none).
pub fn rules_for(type_name: &str) -> Rules {
    RULES
        .iter()
        .find(|r| r.type_name == type_name)
        .copied()
        .unwrap_or(Rules {
            type_name: "",
            unsupported: &[],
            informational: &[],
        })
}

/// The whole model's schema: every object type by name, with `Pod` as the root.
#[derive(Debug, Clone)]
pub struct Schema {
    types: BTreeMap<String, ObjectType>,
}

impl Default for Schema {
    fn default() -> Self {
        Self::new()
    }
}

impl Schema {
    /// Derives the schema from the model structs.
    pub fn new() -> Self {
        let root = serde_json::to_value(schemars::schema_for!(Pod)).unwrap_or(Value::Null);
        let defs = root
            .get("definitions")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let mut types = BTreeMap::new();
        types.insert("Pod".to_string(), object_type("Pod", &root, &defs));
        for (name, def) in &defs {
            if is_quantity(def) {
                continue;
            }
            types.insert(name.clone(), object_type(name, def, &defs));
        }
        Self { types }
    }

    /// The root type, `Pod`.
    pub fn root(&self) -> Option<&ObjectType> {
        self.types.get("Pod")
    }

    /// The object type called `name`.
    pub fn object(&self, name: &str) -> Option<&ObjectType> {
        self.types.get(name)
    }

    /// Every object type.
    pub fn objects(&self) -> impl Iterator<Item = &ObjectType> {
        self.types.values()
    }
}

fn is_quantity(def: &Value) -> bool {
    def.get("x-peapod-type").and_then(Value::as_str) == Some("quantity")
}

fn object_type(name: &str, schema: &Value, defs: &serde_json::Map<String, Value>) -> ObjectType {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields: Vec<Field> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .iter()
                .map(|(fname, fschema)| Field {
                    name: fname.clone(),
                    shape: shape_of(fschema, defs),
                    description: description_of(fschema, defs),
                    required: required.contains(&fname.as_str()),
                })
                .collect()
        })
        .unwrap_or_default();
    fields.sort_by(|a, b| a.name.cmp(&b.name));
    ObjectType {
        name: name.to_string(),
        description: schema
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        fields,
    }
}

fn ref_name(schema: &Value) -> Option<&str> {
    schema
        .get("$ref")
        .and_then(Value::as_str)
        .and_then(|r| r.rsplit('/').next())
}

/// The one non-null sub-schema of an `allOf`/`anyOf` wrapper, or the schema itself.
fn unwrap(schema: &Value) -> &Value {
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(list) = schema.get(key).and_then(Value::as_array) {
            if let Some(inner) = list
                .iter()
                .find(|s| s.get("type").and_then(Value::as_str) != Some("null"))
            {
                return unwrap(inner);
            }
        }
    }
    schema
}

fn description_of(schema: &Value, defs: &serde_json::Map<String, Value>) -> String {
    if let Some(d) = schema.get("description").and_then(Value::as_str) {
        return d.to_string();
    }
    let inner = unwrap(schema);
    if let Some(def) = ref_name(inner).and_then(|n| defs.get(n)) {
        return description_of(def, defs);
    }
    inner
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn shape_of(schema: &Value, defs: &serde_json::Map<String, Value>) -> Shape {
    let schema = unwrap(schema);
    if let Some(name) = ref_name(schema) {
        return match defs.get(name) {
            Some(def) if is_quantity(def) => Shape::Quantity,
            _ => Shape::Object(name.to_string()),
        };
    }
    if is_quantity(schema) {
        return Shape::Quantity;
    }
    let ty = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ => "string",
    };
    match ty {
        "integer" => Shape::Integer,
        "boolean" => Shape::Boolean,
        "array" => Shape::Array(Box::new(
            schema
                .get("items")
                .map(|i| shape_of(i, defs))
                .unwrap_or(Shape::String),
        )),
        "object" => Shape::Map(Box::new(
            schema
                .get("additionalProperties")
                .filter(|v| v.is_object())
                .map(|i| shape_of(i, defs))
                .unwrap_or(Shape::String),
        )),
        _ => Shape::String,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_has_the_model() {
        let s = Schema::new();
        let c = s.object("Container").unwrap();
        let env = c.field("env").unwrap();
        assert_eq!(
            env.shape,
            Shape::Array(Box::new(Shape::Object("EnvVar".into())))
        );
        assert!(c.field("name").unwrap().required);
        assert!(!c.field("args").unwrap().required);
        let r = s.object("ResourceRequirements").unwrap();
        assert_eq!(
            r.field("limits").unwrap().shape.display(),
            "map[string]Quantity"
        );
        let spec = s.object("PodSpec").unwrap();
        assert_eq!(
            spec.field("containers").unwrap().shape.display(),
            "[]Container"
        );
        assert!(spec
            .field("containers")
            .unwrap()
            .description
            .starts_with("List of containers"));
        let ed = s.object("EmptyDirVolumeSource").unwrap();
        assert_eq!(ed.field("sizeLimit").unwrap().shape, Shape::Quantity);
        assert_eq!(
            s.object("Pod")
                .unwrap()
                .field("metadata")
                .unwrap()
                .shape
                .display(),
            "ObjectMeta"
        );
        assert!(s.object("Quantity").is_none());
    }

    #[test]
    fn rules_name_existing_types_and_do_not_overlap_the_model() {
        let s = Schema::new();
        for r in RULES {
            let t = s
                .object(r.type_name)
                .unwrap_or_else(|| panic!("{}", r.type_name));
            for f in r.unsupported.iter().chain(r.informational) {
                assert!(
                    t.field(f).is_none(),
                    "{}.{f} is both modelled and ruled",
                    r.type_name
                );
            }
        }
    }
}
