//! The few control decisions the session takes on raw messages, before rml_rtmp sees them:
//! the message types it handles itself, the acknowledgements the peer's window asks for,
//! and recognising `createStream` (which is bounded per connection).

/// RTMP message type ids the session handles itself.
pub(super) const TYPE_SET_CHUNK_SIZE: u8 = 1;
pub(super) const TYPE_ABORT: u8 = 2;
pub(super) const TYPE_WINDOW_ACK_SIZE: u8 = 5;
pub(super) const TYPE_AUDIO: u8 = 8;
pub(super) const TYPE_VIDEO: u8 = 9;
const TYPE_AMF3_COMMAND: u8 = 17;
const TYPE_AMF0_COMMAND: u8 = 20;

/// Acknowledgements owed to the peer: after every `window` bytes received (the size the
/// peer asked for with Window Acknowledgement Size), the total received so far.
#[derive(Debug, Default)]
pub(super) struct Acks {
    /// The peer's window; 0 until it sends one (then nothing is acknowledged).
    pub(super) window: u32,
    total: u32,
    since_last: u32,
}

impl Acks {
    /// Counts `n` bytes received; the sequence number to acknowledge when one is due.
    pub(super) fn received(&mut self, n: usize) -> Option<u32> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        // RTMP sequence numbers wrap at 2^32.
        self.total = self.total.wrapping_add(n);
        self.since_last = self.since_last.saturating_add(n);
        if self.window == 0 || self.since_last < self.window {
            return None;
        }
        self.since_last = 0;
        Some(self.total)
    }
}

/// Whether a command message is `createStream` (AMF0 string marker, length, name; an AMF3
/// command message has one byte before it).
pub(super) fn is_create_stream(type_id: u8, payload: &[u8]) -> bool {
    const NAME: &[u8] = b"createStream";
    let command = match type_id {
        TYPE_AMF0_COMMAND => payload,
        TYPE_AMF3_COMMAND => payload.get(1..).unwrap_or_default(),
        _ => return false,
    };
    command.get(..3) == Some(&[0x02, 0x00, NAME.len() as u8][..])
        && command.get(3..3 + NAME.len()) == Some(NAME)
}

/// The head of a command message: its name and, when the command object is null (as
/// FFmpeg and rml_rtmp send `closeStream`/`deleteStream`), its first argument if that is
/// a number. Read by hand, not with rml_amf0: a playing connection needs these two values
/// only, and a peek cannot recurse into nested objects or allocate. `None` when the message
/// is not a command or its head is malformed.
pub(super) fn command_head(type_id: u8, payload: &[u8]) -> Option<(&str, Option<f64>)> {
    const STRING: u8 = 0x02;
    const NUMBER: u8 = 0x00;
    const NULL: u8 = 0x05;
    let command = match type_id {
        TYPE_AMF0_COMMAND => payload,
        TYPE_AMF3_COMMAND => payload.get(1..)?,
        _ => return None,
    };
    let number = |at: usize| -> Option<f64> {
        match command.get(at)? {
            &NUMBER => Some(f64::from_be_bytes(*command.get(at + 1..at + 9)?.first_chunk()?)),
            _ => None,
        }
    };
    if *command.first()? != STRING {
        return None;
    }
    let len = usize::from(u16::from_be_bytes(*command.get(1..3)?.first_chunk()?));
    let name = std::str::from_utf8(command.get(3..3 + len)?).ok()?;
    let transaction = 3 + len;
    number(transaction)?;
    let object = transaction + 9;
    let argument = match command.get(object) {
        Some(&NULL) => number(object + 1),
        _ => None,
    };
    Some((name, argument))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amf_command(name: &str, object_null: bool, argument: Option<f64>) -> Vec<u8> {
        let mut out = vec![0x02];
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.push(0x00);
        out.extend_from_slice(&7.0f64.to_be_bytes());
        if object_null {
            out.push(0x05);
        } else {
            out.extend_from_slice(&[0x03, 0x00, 0x00, 0x09]);
        }
        if let Some(argument) = argument {
            out.push(0x00);
            out.extend_from_slice(&argument.to_be_bytes());
        }
        out
    }

    #[test]
    fn a_command_head_is_its_name_and_numeric_first_argument() {
        let delete = amf_command("deleteStream", true, Some(1.0));
        assert_eq!(command_head(TYPE_AMF0_COMMAND, &delete), Some(("deleteStream", Some(1.0))));
        let amf3: Vec<u8> = std::iter::once(0).chain(delete.iter().copied()).collect();
        assert_eq!(command_head(TYPE_AMF3_COMMAND, &amf3), Some(("deleteStream", Some(1.0))));
        let pause = amf_command("pause", false, Some(1.0));
        assert_eq!(command_head(TYPE_AMF0_COMMAND, &pause), Some(("pause", None)), "object");
        let bare = amf_command("closeStream", true, None);
        assert_eq!(command_head(TYPE_AMF0_COMMAND, &bare), Some(("closeStream", None)));
    }

    #[test]
    fn a_malformed_command_head_is_none_at_every_cut() {
        let delete = amf_command("deleteStream", true, Some(1.0));
        // Every truncation before the transaction id's end is refused; after it the
        // argument is simply missing.
        for cut in 0..delete.len() {
            let head = command_head(TYPE_AMF0_COMMAND, &delete[..cut]);
            if cut < 3 + 12 + 9 {
                assert_eq!(head, None, "cut at {cut}");
            } else {
                assert!(matches!(head, Some(("deleteStream", None))), "cut at {cut}");
            }
        }
        assert_eq!(command_head(TYPE_AMF0_COMMAND, &[0x02, 0xff, 0xff, b'a']), None);
        assert_eq!(command_head(TYPE_AMF0_COMMAND, &[0x02, 0x00, 0x02, 0xff, 0xfe]), None, "UTF-8");
        assert_eq!(command_head(TYPE_AMF0_COMMAND, &[0x03, 0x00]), None, "not a string");
        assert_eq!(command_head(18, &delete), None, "not a command message");
        assert_eq!(command_head(TYPE_AMF3_COMMAND, &[]), None);
    }

    #[test]
    fn acknowledgements_follow_the_peers_window_and_count_every_byte() {
        let mut acks = Acks::default();
        // No window announced: no acknowledgements, but the bytes count.
        assert_eq!(acks.received(1_000), None);
        acks.window = 2_500_000;
        assert_eq!(acks.received(2_000_000), None);
        assert_eq!(acks.received(600_000), Some(2_601_000));
        assert_eq!(acks.received(2_499_999), None);
        assert_eq!(acks.received(1), Some(5_101_000));
        // Sequence numbers wrap at 2^32.
        acks.total = u32::MAX;
        assert_eq!(acks.received(2_500_000), Some(2_499_999));
    }

    #[test]
    fn create_stream_commands_are_recognised() {
        let mut command = vec![0x02, 0x00, 12];
        command.extend_from_slice(b"createStream");
        command.extend_from_slice(&[0x00, 0x40, 0x00]);
        assert!(is_create_stream(TYPE_AMF0_COMMAND, &command));
        let amf3: Vec<u8> = std::iter::once(0).chain(command.iter().copied()).collect();
        assert!(is_create_stream(TYPE_AMF3_COMMAND, &amf3));
        assert!(!is_create_stream(TYPE_AMF0_COMMAND, b"\x02\x00\x07connect"));
        assert!(!is_create_stream(TYPE_AMF0_COMMAND, &command[..10]), "truncated");
        assert!(!is_create_stream(TYPE_AMF0_COMMAND, &[]));
        assert!(!is_create_stream(18, &command), "not a command message");
    }
}
