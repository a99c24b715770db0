//! The v1 Pod model: loading, validation, explain and translation to a runtime plan.
