//! The peapod command line: a kubectl-like front end for pods in microVMs.

fn main() {}
