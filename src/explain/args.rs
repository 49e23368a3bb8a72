//! `roster explain`'s flags, named as kubectl names them.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};

use crate::args::parse_positive_duration;

#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// The Service to explain: service/NAME (or svc/NAME, or NAME).
    #[arg(value_name = "service/NAME", value_parser = parse_service)]
    pub service: String,
    /// Namespace of the Service (default: the kubeconfig context's namespace; in a pod, its own).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Path to a kubeconfig file; default: KUBECONFIG, then ~/.kube/config, then the in-cluster config.
    #[arg(long, env = "ROSTER_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Output format: a table, or JSON for scripts.
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    pub output: OutputFormat,
    /// How long reading the Service and its objects may take in all (e.g. 30s, 2m).
    #[arg(long, default_value = "60s", value_parser = parse_positive_duration)]
    pub timeout: Duration,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Table,
    Json,
}

/// The Service's name from `service/NAME`, `services/NAME`, `svc/NAME` or `NAME`, as kubectl takes them.
pub fn parse_service(text: &str) -> Result<String, String> {
    let name = match text.split_once('/') {
        None => text,
        Some(("service" | "services" | "svc", name)) => name,
        Some((kind, _)) => {
            return Err(format!(
                "roster explain explains Services, not {kind}: give service/NAME"
            ));
        }
    };
    if name.is_empty() {
        return Err("a Service name is needed: service/NAME".to_owned());
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_are_named_as_kubectl_names_them() {
        for text in ["service/web", "services/web", "svc/web", "web"] {
            assert_eq!(parse_service(text), Ok("web".to_owned()), "{text}");
        }
        assert!(parse_service("pod/web").unwrap_err().contains("not pod"));
        assert!(parse_service("service/").unwrap_err().contains("name is needed"));
    }
}
