//! Host side of a pod: turns a validated Pod into a microVM, drives its guest agent over
//! hybrid vsock, and keeps the pod's state, logs and volumes on disk.
//!
//! The pieces, in the order `peapod run` uses them: [`assets`] finds the VMM, kernel and
//! initramfs; [`prepare`] resolves images and checks volumes before anything is created;
//! [`state`] owns the pod's directory; [`volumes`] lays out shares and guest file systems;
//! [`translate`] builds the agent's `PodSpec`; [`vm`] runs the VMM process; [`agent`] connects
//! to the guest agent and [`control`] keeps its control connection up; [`logs`] follows container logs; [`run`] ties them together, in a
//! private mount namespace ([`mount_ns`]) when the pod makes host mounts.

pub mod agent;
pub mod assets;
pub mod control;
pub mod events;

pub mod log_reader;
pub mod logs;
pub mod mount_ns;
pub mod outcome;
pub mod prepare;
pub mod run;
pub mod state;
pub mod translate;
pub mod vm;
pub mod volumes;
