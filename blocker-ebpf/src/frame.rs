//! The two kinds of frame the filter runs on: an XDP frame (inbound, on the
//! interface's receive path) and a socket buffer at tc egress (outbound, TCX).
//! Both give the packet's first bytes between two pointers; they differ in how a
//! frame is resized, which only an answer (reject.rs) does.

use crate::parse::Packet;
use aya_ebpf::{
    helpers::{bpf_skb_change_head, bpf_skb_change_tail, bpf_xdp_adjust_head, bpf_xdp_adjust_tail},
    programs::{TcContext, XdpContext},
};

pub(crate) trait Frame {
    /// The first byte of the frame (its link-layer header).
    fn start(&self) -> usize;
    /// One past the last byte the program can read directly.
    fn end(&self) -> usize;
    /// The whole frame's length (an skb may hold more than its linear part).
    fn len(&self) -> usize;
    /// Cuts the frame to `len` bytes; false if refused or the frame is shorter.
    fn cut_to(&self, len: usize) -> bool;
    /// Adds `extra` bytes before the frame's first byte (their content is
    /// undefined); false if refused.
    fn push_front(&self, extra: usize) -> bool;
    /// Offers a dropped or monitored packet to the sampled events (events.rs).
    fn sample(&self, packet: &Packet, interval_ns: u64, list_id: u32, action: u32, verdict: u32);
}

impl Frame for XdpContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn len(&self) -> usize {
        self.data_end() - self.data()
    }
    #[inline(always)]
    fn cut_to(&self, len: usize) -> bool {
        let have = self.data_end() - self.data();
        if have < len {
            return false;
        }
        // SAFETY: shrinking the frame of the program's own context.
        have == len || unsafe { bpf_xdp_adjust_tail(self.ctx, -((have - len) as i32)) } == 0
    }
    #[inline(always)]
    fn push_front(&self, extra: usize) -> bool {
        // SAFETY: growing the frame of the program's own context at its head.
        unsafe { bpf_xdp_adjust_head(self.ctx, -(extra as i32)) == 0 }
    }
    #[inline(always)]
    fn sample(&self, packet: &Packet, interval_ns: u64, list_id: u32, action: u32, verdict: u32) {
        crate::events::sample(self, packet, interval_ns, list_id, action, verdict)
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn start(&self) -> usize {
        self.data()
    }
    #[inline(always)]
    fn end(&self) -> usize {
        self.data_end()
    }
    #[inline(always)]
    fn len(&self) -> usize {
        TcContext::len(self) as usize
    }
    #[inline(always)]
    fn cut_to(&self, len: usize) -> bool {
        let have = TcContext::len(self) as usize;
        if have < len {
            return false;
        }
        // SAFETY: trimming the program's own socket buffer.
        have == len || unsafe { bpf_skb_change_tail(self.skb.skb, len as u32, 0) } == 0
    }
    #[inline(always)]
    fn push_front(&self, extra: usize) -> bool {
        // SAFETY: growing the program's own socket buffer at its head.
        unsafe { bpf_skb_change_head(self.skb.skb, extra as u32, 0) == 0 }
    }
    /// Events are of inbound drops only (`DropEvent` names a source).
    #[inline(always)]
    fn sample(&self, _: &Packet, _: u64, _: u32, _: u32, _: u32) {}
}
