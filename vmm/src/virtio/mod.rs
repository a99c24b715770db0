//! Virtio devices for the microVM: the transport-agnostic device trait, the state, checks and
//! worker thread handling every device shares ([`DeviceState`], [`DeviceParts`],
//! [`WorkerThread`]), the interrupt handle devices use to notify the driver, the virtio-mmio
//! transport, the worker-thread plumbing the devices share ([`event_loop`]) and the user-space
//! vsock and virtio-fs devices (in process, or through a vhost-user back-end).
//!
//! References are to the virtio specification v1.2 ("spec §x.y").

pub mod counters;
pub mod event_loop;
pub mod fs;
pub mod interrupt;
pub mod mmio;
#[cfg(test)]
pub(crate) mod test_driver;
pub mod vhost_user_fs;
pub mod vsock;

use std::sync::Arc;
use std::thread::JoinHandle;

use log::warn;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

pub use interrupt::{Interrupt, InterruptError};

/// Device ID of a virtio network device (spec §5, table "Device Types").
pub const TYPE_NET: u32 = 1;
/// Device ID of a virtio block device (spec §5).
pub const TYPE_BLOCK: u32 = 2;
/// Device ID of a virtio vsock device (spec §5, §5.10.1).
pub const TYPE_VSOCK: u32 = 19;
/// Device ID of a virtio file system device (spec §5, §5.11.1).
pub const TYPE_FS: u32 = 26;

/// Feature bit: the device complies with virtio 1.x (spec §6, "Reserved Feature Bits").
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// Feature bit: the driver may use indirect descriptors (spec §2.7.5.3, §6).
pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
/// Feature bit: used/avail event index notification suppression (spec §2.7.10, §6).
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;

/// Device status bits (spec §2.1 "Device Status Field").
pub mod status {
    /// The guest OS has found the device and recognised it as a valid virtio device.
    pub const ACKNOWLEDGE: u32 = 1;
    /// The guest OS knows how to drive the device.
    pub const DRIVER: u32 = 2;
    /// The driver is set up and ready to drive the device.
    pub const DRIVER_OK: u32 = 4;
    /// The driver has acknowledged all the features it understands; negotiation is complete.
    pub const FEATURES_OK: u32 = 8;
    /// The device has experienced an error from which it can't recover.
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    /// Something went wrong in the guest and it has given up on the device.
    pub const FAILED: u32 = 0x80;
}

/// Why a device could not be activated.
#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    /// The transport handed over a different number of queues than the device has.
    #[error("expected {expected} queues, got {actual}")]
    QueueCount { expected: usize, actual: usize },
    /// The transport handed over a different number of queue eventfds than queues.
    #[error("expected {expected} queue eventfds, got {actual}")]
    EventCount { expected: usize, actual: usize },
    /// A queue the device needs was not made ready by the driver.
    #[error("queue {0} is not ready")]
    QueueNotReady(usize),
    /// The device was already active.
    #[error("device is already activated")]
    AlreadyActivated,
    /// The device backend could not be started.
    #[error("device backend failed to start: {0}")]
    Backend(String),
}

/// A virtio device, independent of the transport (MMIO, PCI) that exposes it to the guest.
///
/// The transport owns the register state and the driver-status state machine; the device only
/// describes itself (type, queues, features, config space) and is started with
/// [`VirtioDevice::activate`] once the driver has set `DRIVER_OK`.
pub trait VirtioDevice: Send {
    /// The virtio device type (spec §5), e.g. [`TYPE_VSOCK`].
    fn device_type(&self) -> u32;

    /// Maximum size of each of the device's virtqueues; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];

    /// Feature bits the device offers (spec §2.2), including transport bits such as
    /// [`VIRTIO_F_VERSION_1`].
    fn avail_features(&self) -> u64;

    /// Feature bits the driver accepted, as last given to [`VirtioDevice::ack_features`].
    fn acked_features(&self) -> u64;

    /// Records the features the driver accepted. The transport only calls this with a subset of
    /// [`VirtioDevice::avail_features`] at `FEATURES_OK` time (spec §3.1.1 step 5).
    fn ack_features(&mut self, features: u64);

    /// Reads the device-specific configuration space (spec §4.2.2, offset 0x100 and up).
    /// Bytes outside the config space read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);

    /// Writes the device-specific configuration space. Read-only fields ignore the write.
    fn write_config(&mut self, offset: u64, data: &[u8]);

    /// Starts the device: it takes ownership of guest memory, the interrupt handle, the queues
    /// (one per entry of [`VirtioDevice::queue_max_sizes`], as configured by the driver) and the
    /// eventfds the transport signals on a queue notification.
    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        queue_evts: Vec<EventFd>,
    ) -> Result<(), ActivateError>;

    /// Stops the device and returns it to its pre-activation state (spec §2.4 "Device Reset"):
    /// the queues, eventfds and interrupt given to `activate` are dropped.
    fn reset(&mut self);

    /// Whether the device is currently activated.
    fn is_activated(&self) -> bool;

    /// The device's counters, if it keeps any (the SIGUSR1 state dump prints them).
    fn counters(&self) -> Option<Arc<counters::Counters>> {
        None
    }
}

/// What every device of this VMM keeps the same way: its type and queue sizes, the feature
/// negotiation (spec §2.2: the driver's features are the offered ones it accepted, cleared by a
/// reset), a config space the driver may read but not change, and whether it is active.
///
/// A device embeds one and implements [`DeviceParts`]; that makes it a [`VirtioDevice`].
#[derive(Debug)]
pub struct DeviceState {
    name: String,
    device_type: u32,
    queue_max_sizes: Vec<u16>,
    avail_features: u64,
    acked_features: u64,
    config: Vec<u8>,
    activated: bool,
}

impl DeviceState {
    /// The state of a device of `device_type` named `name` in log messages (e.g.
    /// `"virtio-fs share"`), with one queue per entry of `queue_max_sizes` (its maximum size),
    /// offering `avail_features`, with the read-only config space `config`.
    pub fn new(
        name: impl Into<String>,
        device_type: u32,
        queue_max_sizes: Vec<u16>,
        avail_features: u64,
        config: Vec<u8>,
    ) -> Self {
        DeviceState {
            name: name.into(),
            device_type,
            queue_max_sizes,
            avail_features,
            acked_features: 0,
            config,
            activated: false,
        }
    }

    /// The device's name in log messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The feature bits the driver accepted (a subset of the offered ones).
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Whether the device is active (activated and not reset since).
    pub fn is_activated(&self) -> bool {
        self.activated
    }
}

/// What a device is given when it is activated (see [`VirtioDevice::activate`]).
pub struct Activation {
    /// The guest memory.
    pub mem: GuestMemoryMmap,
    /// The handle to interrupt the driver with.
    pub interrupt: Interrupt,
    /// The queues, as the driver configured them.
    pub queues: Vec<Queue>,
    /// For each queue, the eventfd the transport signals when the driver notifies it.
    pub queue_evts: Vec<EventFd>,
}

/// The part of a device that differs from device to device: starting and stopping the work on
/// its queues. The rest lives in the device's [`DeviceState`], and every `DeviceParts` is a
/// [`VirtioDevice`] through the implementation below, which makes the activation checks, keeps
/// the negotiated features and the active flag, and refuses config space writes.
pub trait DeviceParts: Send {
    /// The device's shared state.
    fn state(&self) -> &DeviceState;

    /// The device's shared state, to change.
    fn state_mut(&mut self) -> &mut DeviceState;

    /// Starts the work on the queues with what [`VirtioDevice::activate`] was given, after its
    /// checks passed (not active, every queue there, ready and with its eventfd). On an error
    /// the device stays inactive.
    fn start(&mut self, activation: Activation) -> Result<(), ActivateError>;

    /// Stops the work on the queues and drops what `start` was given; does nothing when not
    /// started.
    fn stop(&mut self);

    /// The device's counters, if it keeps any.
    fn counters(&self) -> Option<Arc<counters::Counters>> {
        None
    }
}

impl<T: DeviceParts> VirtioDevice for T {
    fn device_type(&self) -> u32 {
        self.state().device_type
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.state().queue_max_sizes
    }

    fn avail_features(&self) -> u64 {
        self.state().avail_features
    }

    fn acked_features(&self) -> u64 {
        self.state().acked_features
    }

    fn ack_features(&mut self, features: u64) {
        let state = self.state_mut();
        state.acked_features = features & state.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.state().config, offset, data);
    }

    fn write_config(&mut self, offset: u64, _data: &[u8]) {
        warn!(
            "{}: guest write to read-only config space at {offset:#x} ignored",
            self.state().name
        );
    }

    fn activate(
        &mut self,
        mem: GuestMemoryMmap,
        interrupt: Interrupt,
        queues: Vec<Queue>,
        queue_evts: Vec<EventFd>,
    ) -> Result<(), ActivateError> {
        let state = self.state();
        check_activation(
            state.activated,
            &queues,
            &queue_evts,
            state.queue_max_sizes.len(),
        )?;
        self.start(Activation {
            mem,
            interrupt,
            queues,
            queue_evts,
        })?;
        self.state_mut().activated = true;
        Ok(())
    }

    fn reset(&mut self) {
        self.stop();
        let state = self.state_mut();
        state.acked_features = 0;
        state.activated = false;
    }

    fn is_activated(&self) -> bool {
        self.state().activated
    }

    fn counters(&self) -> Option<Arc<counters::Counters>> {
        DeviceParts::counters(self)
    }
}

/// A device's worker thread, and the eventfd that tells it to return.
#[derive(Debug)]
pub struct WorkerThread<T> {
    name: String,
    kill_evt: EventFd,
    thread: JoinHandle<T>,
}

impl<T: Send + 'static> WorkerThread<T> {
    /// Starts thread `name` running `run`, which gets the kill eventfd and must return soon
    /// after it is signalled.
    pub fn spawn(
        name: String,
        run: impl FnOnce(EventFd) -> T + Send + 'static,
    ) -> std::io::Result<Self> {
        let kill_evt = EventFd::new(EFD_NONBLOCK)?;
        let worker_kill = kill_evt.try_clone()?;
        let thread = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || run(worker_kill))?;
        Ok(WorkerThread {
            name,
            kill_evt,
            thread,
        })
    }

    /// Signals the thread to return and joins it. `None` (logged) if it could not be signalled,
    /// and is left detached, or if it panicked.
    pub fn stop(self) -> Option<T> {
        if let Err(e) = self.kill_evt.write(1) {
            // Without the kill event the thread cannot be joined.
            warn!("{}: failed to stop the worker thread: {e}", self.name);
            return None;
        }
        match self.thread.join() {
            Ok(result) => Some(result),
            Err(_) => {
                warn!("{}: the worker thread panicked", self.name);
                None
            }
        }
    }
}

/// The checks every device makes before it starts (see [`VirtioDevice::activate`]): not already
/// active, one queue and one queue eventfd for each of its `expected` queues, every queue made
/// ready by the driver.
pub fn check_activation(
    activated: bool,
    queues: &[Queue],
    queue_evts: &[EventFd],
    expected: usize,
) -> Result<(), ActivateError> {
    if activated {
        return Err(ActivateError::AlreadyActivated);
    }
    if queues.len() != expected {
        return Err(ActivateError::QueueCount {
            expected,
            actual: queues.len(),
        });
    }
    if queue_evts.len() != expected {
        return Err(ActivateError::EventCount {
            expected,
            actual: queue_evts.len(),
        });
    }
    if let Some(i) = queues.iter().position(|q| !q.ready()) {
        return Err(ActivateError::QueueNotReady(i));
    }
    Ok(())
}

/// Copies the bytes of `config` at `offset` into `data`; bytes outside `config` read as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    data.fill(0);
    let Ok(start) = usize::try_from(offset) else {
        return;
    };
    if start >= config.len() {
        return;
    }
    let end = config.len().min(start.saturating_add(data.len()));
    data[..end - start].copy_from_slice(&config[start..end]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn queues(ready: &[bool]) -> Vec<Queue> {
        ready
            .iter()
            .map(|&r| {
                let mut q = Queue::new(16).unwrap();
                q.set_ready(r);
                q
            })
            .collect()
    }

    fn evts(n: usize) -> Vec<EventFd> {
        (0..n)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect()
    }

    #[test]
    fn check_activation_accepts_ready_queues() {
        check_activation(false, &queues(&[true, true]), &evts(2), 2).unwrap();
    }

    #[test]
    fn check_activation_rejects_each_problem() {
        let err = |activated, q: &[bool], e, expected| {
            check_activation(activated, &queues(q), &evts(e), expected).unwrap_err()
        };
        assert!(matches!(
            err(true, &[true, true], 2, 2),
            ActivateError::AlreadyActivated
        ));
        assert!(matches!(
            err(false, &[true], 2, 2),
            ActivateError::QueueCount {
                expected: 2,
                actual: 1
            }
        ));
        assert!(matches!(
            err(false, &[true, true], 3, 2),
            ActivateError::EventCount {
                expected: 2,
                actual: 3
            }
        ));
        assert!(matches!(
            err(false, &[true, false, true], 3, 3),
            ActivateError::QueueNotReady(1)
        ));
    }

    /// Waits (polling) until `kill` is signalled.
    fn wait_killed(kill: &EventFd) {
        while kill.read().is_err() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn worker_thread_runs_until_stopped() {
        let (tx, rx) = std::sync::mpsc::channel();
        let worker = WorkerThread::spawn("test-worker".into(), move |kill| {
            tx.send(std::thread::current().name().map(String::from))
                .unwrap();
            wait_killed(&kill);
            42
        })
        .unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("test-worker"));
        assert_eq!(worker.stop(), Some(42));
    }

    #[test]
    fn worker_thread_panic_is_none() {
        let worker = WorkerThread::spawn("test-panic".into(), |kill| {
            wait_killed(&kill);
            panic!("worker failed");
        })
        .unwrap();
        assert_eq!(worker.stop(), None::<()>);
    }

    /// A device made of a [`DeviceState`] and a recording start/stop.
    struct Parts {
        state: DeviceState,
        started: usize,
        stopped: usize,
        fail_start: bool,
        queues: Vec<Queue>,
    }

    impl DeviceParts for Parts {
        fn state(&self) -> &DeviceState {
            &self.state
        }
        fn state_mut(&mut self) -> &mut DeviceState {
            &mut self.state
        }
        fn start(&mut self, activation: Activation) -> Result<(), ActivateError> {
            if self.fail_start {
                return Err(ActivateError::Backend("no".into()));
            }
            self.started += 1;
            self.queues = activation.queues;
            Ok(())
        }
        fn stop(&mut self) {
            self.stopped += 1;
            self.queues.clear();
        }
    }

    fn parts() -> Parts {
        Parts {
            state: DeviceState::new(
                "test",
                TYPE_BLOCK,
                vec![16, 32],
                (1 << VIRTIO_F_VERSION_1) | 1 << 3,
                vec![1, 2, 3],
            ),
            started: 0,
            stopped: 0,
            fail_start: false,
            queues: Vec::new(),
        }
    }

    fn activate(dev: &mut Parts, ready: &[bool]) -> Result<(), ActivateError> {
        let mem =
            GuestMemoryMmap::<()>::from_ranges(&[(vm_memory::GuestAddress(0), 0x1000)]).unwrap();
        let irq = Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap());
        dev.activate(mem, irq, queues(ready), evts(ready.len()))
    }

    #[test]
    fn device_state_describes_the_device() {
        let mut dev = parts();
        assert_eq!(dev.device_type(), TYPE_BLOCK);
        assert_eq!(dev.queue_max_sizes(), &[16, 32]);
        assert_eq!(dev.avail_features(), (1 << VIRTIO_F_VERSION_1) | 1 << 3);
        assert_eq!(dev.state().name(), "test");
        let mut data = [0xff; 4];
        dev.read_config(1, &mut data);
        assert_eq!(data, [2, 3, 0, 0]);
        // The config space is read-only.
        dev.write_config(0, &[9, 9, 9]);
        dev.read_config(0, &mut data);
        assert_eq!(data, [1, 2, 3, 0]);
    }

    #[test]
    fn device_state_keeps_only_offered_features() {
        let mut dev = parts();
        assert_eq!(dev.acked_features(), 0);
        dev.ack_features(u64::MAX);
        assert_eq!(dev.acked_features(), dev.avail_features());
        dev.ack_features(1 << 3 | 1 << 5);
        assert_eq!(dev.acked_features(), 1 << 3);
        assert_eq!(dev.state().acked_features(), 1 << 3);
    }

    #[test]
    fn activation_checks_start_and_reset() {
        let mut dev = parts();
        dev.ack_features(1 << VIRTIO_F_VERSION_1);
        // A failed check does not start the device.
        assert!(matches!(
            activate(&mut dev, &[true]),
            Err(ActivateError::QueueCount {
                expected: 2,
                actual: 1
            })
        ));
        assert!(matches!(
            activate(&mut dev, &[true, false]),
            Err(ActivateError::QueueNotReady(1))
        ));
        assert_eq!(dev.started, 0);
        assert!(!dev.is_activated());
        activate(&mut dev, &[true, true]).unwrap();
        assert!(dev.is_activated() && dev.state().is_activated());
        assert_eq!((dev.started, dev.queues.len()), (1, 2));
        assert!(matches!(
            activate(&mut dev, &[true, true]),
            Err(ActivateError::AlreadyActivated)
        ));
        assert_eq!(dev.started, 1);
        // A reset stops the work and forgets the features; the device can start again.
        dev.reset();
        assert!(!dev.is_activated());
        assert_eq!((dev.stopped, dev.queues.len()), (1, 0));
        assert_eq!(dev.acked_features(), 0);
        activate(&mut dev, &[true, true]).unwrap();
        assert_eq!(dev.started, 2);
    }

    #[test]
    fn failed_start_leaves_the_device_inactive() {
        let mut dev = parts();
        dev.fail_start = true;
        assert!(matches!(
            activate(&mut dev, &[true, true]),
            Err(ActivateError::Backend(_))
        ));
        assert!(!dev.is_activated());
        dev.fail_start = false;
        activate(&mut dev, &[true, true]).unwrap();
        assert!(dev.is_activated());
    }
}
