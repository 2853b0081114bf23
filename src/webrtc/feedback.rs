//! [`FeedbackTap`]: an `rtc` interceptor that lets a viewer's keyframe requests (RTCP PLI,
//! FIR), retransmission requests (NACK) and receiver reports (RR) through to the session.
//!
//! `rtc` 0.21 ends the inbound RTCP path at the last interceptor of every chain
//! (`NoopInterceptor`): control traffic is for its interceptors (the NACK responder has
//! answered a NACK by the time it gets there), and only packets an interceptor marks
//! `DeliverToApplication` reach `poll_read`. A WHEP session needs the PLIs and FIRs (to ask
//! the publisher for a keyframe), counts the NACKs and reads the receiver reports (round
//! trip and loss, [`super::quality`]), so this interceptor, the last before
//! that terminus, marks RTCP compounds that hold one. It forwards everything else unchanged
//! and emits nothing of its own.

use std::collections::VecDeque;
use std::time::Instant;

use rtc::interceptor::{Attribute, Interceptor, Packet, Slot, StreamInfo, TaggedPacket};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtcp::transport_feedbacks::transport_layer_nack::TransportLayerNack;

/// Where the tap sits: application-ward of every interceptor `rtc` ships (the highest named
/// slot is the jitter buffer's, 13 000), so each of them has seen the packet first.
pub fn slot() -> Slot {
    Slot::from(13_500)
}

/// See the module docs.
#[derive(Default)]
pub struct FeedbackTap {
    read: VecDeque<TaggedPacket>,
    write: VecDeque<TaggedPacket>,
}

/// Whether `packet` is feedback a WHEP session acts on.
fn wanted(packet: &dyn rtc::rtcp::Packet) -> bool {
    let any = packet.as_any();
    any.is::<PictureLossIndication>()
        || any.is::<FullIntraRequest>()
        || any.is::<TransportLayerNack>()
        || any.is::<ReceiverReport>()
}

impl rtc::sansio::Protocol<TaggedPacket, TaggedPacket, ()> for FeedbackTap {
    type Rout = TaggedPacket;
    type Wout = TaggedPacket;
    type Eout = ();
    type Error = rtc::shared::error::Error;
    type Time = Instant;

    fn handle_read(&mut self, mut msg: TaggedPacket) -> Result<(), Self::Error> {
        if let Packet::Rtcp(packets) = &msg.message.packet {
            if packets.iter().any(|p| wanted(p.as_ref())) {
                msg.message.add(Attribute::DeliverToApplication);
            }
        }
        self.read.push_back(msg);
        Ok(())
    }

    fn poll_read(&mut self) -> Option<Self::Rout> {
        self.read.pop_front()
    }

    fn handle_write(&mut self, msg: TaggedPacket) -> Result<(), Self::Error> {
        self.write.push_back(msg);
        Ok(())
    }

    fn poll_write(&mut self) -> Option<Self::Wout> {
        self.write.pop_front()
    }
}

impl Interceptor for FeedbackTap {
    fn bind_local_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_local_stream(&mut self, _info: &StreamInfo) {}
    fn bind_remote_stream(&mut self, _info: &StreamInfo) {}
    fn unbind_remote_stream(&mut self, _info: &StreamInfo) {}
}

#[cfg(test)]
mod tests {
    use rtc::interceptor::AttributedPacket;
    use rtc::rtcp::source_description::SourceDescription;
    use rtc::sansio::Protocol as _;
    use rtc::shared::TransportContext;

    use super::*;

    fn rtcp(packets: Vec<Box<dyn rtc::rtcp::Packet>>) -> TaggedPacket {
        TaggedPacket {
            now: Instant::now(),
            transport: TransportContext::default(),
            message: AttributedPacket::new(Packet::Rtcp(packets)),
        }
    }

    #[test]
    fn feedback_and_receiver_reports_are_marked_for_the_session_and_the_rest_is_not() {
        let mut tap = FeedbackTap::default();
        let pli = PictureLossIndication { sender_ssrc: 1, media_ssrc: 2 };
        tap.handle_read(rtcp(vec![Box::new(SourceDescription::default()), Box::new(pli)]))
            .expect("read");
        tap.handle_read(rtcp(vec![Box::new(ReceiverReport::default())])).expect("read");
        tap.handle_read(rtcp(vec![Box::new(SourceDescription::default())])).expect("read");
        let marked = tap.poll_read().expect("passed on");
        assert!(marked.message.has(&Attribute::DeliverToApplication));
        let report = tap.poll_read().expect("passed on");
        assert!(report.message.has(&Attribute::DeliverToApplication));
        let other = tap.poll_read().expect("passed on");
        assert!(!other.message.has(&Attribute::DeliverToApplication));
        assert!(tap.poll_read().is_none());
    }
}
