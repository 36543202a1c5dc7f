//! [`Graph`]: a step's launches recorded once by stream capture
//! ([`Cuda::capture`]) and replayed ([`Cuda::launch_graph`]).

use std::ptr;
use std::sync::Arc;

use cust::sys as cu;

use crate::buffer::Owner;
use crate::device::Cuda;
use crate::error::Error;

/// A CUDA graph recorded by [`Cuda::capture`].
pub struct Graph {
    graph: cu::CUgraph,
    exec: cu::CUgraphExec,
    _owner: Arc<Owner>,
}

impl Drop for Graph {
    fn drop(&mut self) {
        // SAFETY: handles created by `Cuda::capture` and owned here; the
        // context is kept alive by `_owner`.
        unsafe {
            if !self.exec.is_null() {
                cu::cuGraphExecDestroy(self.exec);
            }
            if !self.graph.is_null() {
                cu::cuGraphDestroy(self.graph);
            }
        }
    }
}

impl Cuda {
    /// Records the launches `f` makes on the stream into a CUDA graph
    /// (stream capture; nothing runs), for [`Cuda::launch_graph`] to replay.
    /// A FROG step can be captured because it is launches only; the host
    /// values of the step (its `tau`, the step count) are those of capture
    /// time.
    pub fn capture(&self, f: impl FnOnce() -> Result<(), Error>) -> Result<Graph, Error> {
        let stream = self.stream.as_inner();
        // SAFETY: plain driver calls on this backend's stream and on graph
        // handles owned by the returned value.
        unsafe {
            let mode = cu::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
            Error::check("cuStreamBeginCapture", cu::cuStreamBeginCapture_v2(stream, mode))?;
            let recorded = f();
            let mut graph = ptr::null_mut();
            let ended = Error::check("cuStreamEndCapture", cu::cuStreamEndCapture(stream, &mut graph));
            let graph = Graph { graph, exec: ptr::null_mut(), _owner: self.owner.clone() };
            recorded?;
            ended?;
            let mut graph = graph;
            Error::check("cuGraphInstantiateWithFlags", cu::cuGraphInstantiateWithFlags(&mut graph.exec, graph.graph, 0))?;
            Ok(graph)
        }
    }

    /// Launches a captured graph on the stream.
    pub fn launch_graph(&self, graph: &Graph) -> Result<(), Error> {
        if !Arc::ptr_eq(&graph._owner, &self.owner) {
            return Err(Error::ForeignBuffer { what: "graph" });
        }
        // SAFETY: the graph was instantiated in this backend's context.
        unsafe { Error::check("cuGraphLaunch", cu::cuGraphLaunch(graph.exec, self.stream.as_inner())) }
    }
}
