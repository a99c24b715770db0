//! A fake vhost-user back-end for the device tests: it records every request and keeps the
//! eventfds and ring settings it was given, served by the `vhost` crate's back-end side over a
//! Unix socket in a temporary directory.

use std::fs::File;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::*;
use vhost::vhost_user::{BackendReqHandler, Error, GpuBackend, VhostUserBackendReqHandlerMut};

type Result<T> = std::result::Result<T, Error>;

/// What the fake back-end was told.
#[derive(Default)]
pub(super) struct State {
    /// Virtio features offered by GET_FEATURES.
    pub(super) features: u64,
    /// Protocol features offered by GET_PROTOCOL_FEATURES.
    pub(super) protocol_features: u64,
    /// Request names, in order.
    pub(super) log: Vec<String>,
    pub(super) acked_features: Option<u64>,
    pub(super) acked_protocol_features: Option<u64>,
    /// (guest address, size, user address, mmap offset) of each SET_MEM_TABLE region.
    pub(super) regions: Vec<(u64, u64, u64, u64)>,
    pub(super) region_files: Vec<File>,
    pub(super) vring_num: [u32; 2],
    /// (descriptor, used, available) user addresses.
    pub(super) vring_addr: [(u64, u64, u64); 2],
    pub(super) vring_base: [Option<u32>; 2],
    pub(super) enabled: [bool; 2],
    pub(super) kick: [Option<File>; 2],
    pub(super) call: [Option<File>; 2],
}

pub(super) struct Fake(pub(super) Arc<Mutex<State>>);

impl Fake {
    fn log(&self, what: impl Into<String>) {
        self.0.lock().unwrap().log.push(what.into());
    }
}

fn unsupported<T>() -> Result<T> {
    Err(Error::InvalidOperation(
        "not supported by the fake back-end",
    ))
}

impl VhostUserBackendReqHandlerMut for Fake {
    fn set_owner(&mut self) -> Result<()> {
        self.log("SET_OWNER");
        Ok(())
    }
    fn reset_owner(&mut self) -> Result<()> {
        self.log("RESET_OWNER");
        Ok(())
    }
    fn reset_device(&mut self) -> Result<()> {
        self.log("RESET_DEVICE");
        Ok(())
    }
    fn get_features(&mut self) -> Result<u64> {
        self.log("GET_FEATURES");
        Ok(self.0.lock().unwrap().features)
    }
    fn set_features(&mut self, features: u64) -> Result<()> {
        self.log("SET_FEATURES");
        self.0.lock().unwrap().acked_features = Some(features);
        Ok(())
    }
    fn set_mem_table(&mut self, ctx: &[VhostUserMemoryRegion], files: Vec<File>) -> Result<()> {
        self.log("SET_MEM_TABLE");
        let mut s = self.0.lock().unwrap();
        s.regions = ctx
            .iter()
            .map(|r| (r.guest_phys_addr, r.memory_size, r.user_addr, r.mmap_offset))
            .collect();
        s.region_files = files;
        Ok(())
    }
    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<()> {
        self.log(format!("SET_VRING_NUM {index}"));
        self.0.lock().unwrap().vring_num[index as usize] = num;
        Ok(())
    }
    fn set_vring_addr(
        &mut self,
        index: u32,
        _flags: VhostUserVringAddrFlags,
        descriptor: u64,
        used: u64,
        available: u64,
        _log: u64,
    ) -> Result<()> {
        self.log(format!("SET_VRING_ADDR {index}"));
        self.0.lock().unwrap().vring_addr[index as usize] = (descriptor, used, available);
        Ok(())
    }
    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<()> {
        self.log(format!("SET_VRING_BASE {index}"));
        self.0.lock().unwrap().vring_base[index as usize] = Some(base);
        Ok(())
    }
    fn get_vring_base(&mut self, index: u32) -> Result<VhostUserVringState> {
        self.log(format!("GET_VRING_BASE {index}"));
        Ok(VhostUserVringState::new(index, 0))
    }
    fn set_vring_kick(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.log(format!("SET_VRING_KICK {index}"));
        self.0.lock().unwrap().kick[index as usize] = fd;
        Ok(())
    }
    fn set_vring_call(&mut self, index: u8, fd: Option<File>) -> Result<()> {
        self.log(format!("SET_VRING_CALL {index}"));
        self.0.lock().unwrap().call[index as usize] = fd;
        Ok(())
    }
    fn set_vring_err(&mut self, _index: u8, _fd: Option<File>) -> Result<()> {
        unsupported()
    }
    fn get_protocol_features(&mut self) -> Result<VhostUserProtocolFeatures> {
        self.log("GET_PROTOCOL_FEATURES");
        Ok(VhostUserProtocolFeatures::from_bits_truncate(
            self.0.lock().unwrap().protocol_features,
        ))
    }
    fn set_protocol_features(&mut self, features: u64) -> Result<()> {
        self.log("SET_PROTOCOL_FEATURES");
        self.0.lock().unwrap().acked_protocol_features = Some(features);
        Ok(())
    }
    fn get_queue_num(&mut self) -> Result<u64> {
        Ok(2)
    }
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<()> {
        self.log(format!("SET_VRING_ENABLE {index} {}", u8::from(enable)));
        self.0.lock().unwrap().enabled[index as usize] = enable;
        Ok(())
    }
    fn get_config(&mut self, _: u32, _: u32, _: VhostUserConfigFlags) -> Result<Vec<u8>> {
        unsupported()
    }
    fn set_config(&mut self, _: u32, _: &[u8], _: VhostUserConfigFlags) -> Result<()> {
        unsupported()
    }
    fn set_gpu_socket(&mut self, _: GpuBackend) -> Result<()> {
        unsupported()
    }
    fn get_shared_object(&mut self, _: VhostUserSharedMsg) -> Result<File> {
        unsupported()
    }
    fn get_inflight_fd(&mut self, _: &VhostUserInflight) -> Result<(VhostUserInflight, File)> {
        unsupported()
    }
    fn set_inflight_fd(&mut self, _: &VhostUserInflight, _: File) -> Result<()> {
        unsupported()
    }
    fn get_max_mem_slots(&mut self) -> Result<u64> {
        unsupported()
    }
    fn add_mem_region(&mut self, _: &VhostUserSingleMemoryRegion, _: File) -> Result<()> {
        unsupported()
    }
    fn remove_mem_region(&mut self, _: &VhostUserSingleMemoryRegion) -> Result<()> {
        unsupported()
    }
    fn set_device_state_fd(
        &mut self,
        _: VhostTransferStateDirection,
        _: VhostTransferStatePhase,
        _: File,
    ) -> Result<Option<File>> {
        unsupported()
    }
    fn check_device_state(&mut self) -> Result<()> {
        unsupported()
    }
    fn get_shmem_config(&mut self) -> Result<VhostUserShMemConfig> {
        unsupported()
    }
    fn set_log_base(&mut self, _: &VhostUserLog, _: File) -> Result<()> {
        unsupported()
    }
}

/// A fake back-end listening on `<dir>/fs.sock`, serving one connection on a thread.
pub(super) struct Server {
    pub(super) state: Arc<Mutex<State>>,
    pub(super) socket: PathBuf,
    _dir: tempfile::TempDir,
    _thread: JoinHandle<()>,
}

impl Server {
    pub(super) fn start(features: u64, protocol_features: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fs.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let state = Arc::new(Mutex::new(State {
            features,
            protocol_features,
            ..State::default()
        }));
        let backend = Arc::new(Mutex::new(Fake(state.clone())));
        let thread = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut handler = BackendReqHandler::from_stream(stream, backend);
            // Ends when the front-end disconnects (or sends something the fake refuses).
            while handler.handle_request().is_ok() {}
        });
        Server {
            state,
            socket,
            _dir: dir,
            _thread: thread,
        }
    }

    /// Waits until the request log has `n` entries, then returns it.
    pub(super) fn wait_log(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let log = self.state.lock().unwrap().log.clone();
            if log.len() >= n || start.elapsed() > Duration::from_secs(5) {
                return log;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}
