//! `onMetaData` as viewers receive it: AMF0 `["onMetaData", {..}]`, rebuilt from what
//! rml_rtmp parsed out of the publisher's `@setDataFrame`.

use std::collections::HashMap;

use bytes::Bytes;
use rml_amf0::Amf0Value;
use rml_rtmp::sessions::StreamMetadata;

/// Serializes `metadata` as the body of an FLV script tag / RTMP AMF0 data message.
pub fn encode_on_metadata(metadata: &StreamMetadata) -> Bytes {
    let mut props: HashMap<String, Amf0Value> = HashMap::new();
    let mut num = |name: &str, value: Option<f64>| {
        if let Some(v) = value {
            props.insert(name.to_owned(), Amf0Value::Number(v));
        }
    };
    num("width", metadata.video_width.map(f64::from));
    num("height", metadata.video_height.map(f64::from));
    num("videocodecid", metadata.video_codec_id.map(f64::from));
    num("videodatarate", metadata.video_bitrate_kbps.map(f64::from));
    num("framerate", metadata.video_frame_rate.map(f64::from));
    num("audiocodecid", metadata.audio_codec_id.map(f64::from));
    num("audiodatarate", metadata.audio_bitrate_kbps.map(f64::from));
    num("audiosamplerate", metadata.audio_sample_rate.map(f64::from));
    num("audiochannels", metadata.audio_channels.map(f64::from));
    if let Some(stereo) = metadata.audio_is_stereo {
        props.insert("stereo".to_owned(), Amf0Value::Boolean(stereo));
    }
    if let Some(encoder) = &metadata.encoder {
        props.insert("encoder".to_owned(), Amf0Value::Utf8String(encoder.clone()));
    }
    props.insert(
        "server".to_owned(),
        Amf0Value::Utf8String(concat!("ZenLive ", env!("CARGO_PKG_VERSION")).to_owned()),
    );
    let values = vec![Amf0Value::Utf8String("onMetaData".to_owned()), Amf0Value::Object(props)];
    // Serializing numbers, booleans and strings cannot fail; an empty body would only cost
    // viewers their metadata, never their media.
    Bytes::from(rml_amf0::serialize(&values).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_amf0() {
        let mut m = StreamMetadata::new();
        m.video_width = Some(320);
        m.video_height = Some(240);
        m.encoder = Some("Lavf".to_owned());
        let bytes = encode_on_metadata(&m);
        let mut cursor = std::io::Cursor::new(bytes.to_vec());
        let values = rml_amf0::deserialize(&mut cursor).expect("valid AMF0");
        assert_eq!(values[0], Amf0Value::Utf8String("onMetaData".to_owned()));
        let Amf0Value::Object(props) = &values[1] else { panic!("object expected") };
        assert_eq!(props.get("width"), Some(&Amf0Value::Number(320.0)));
        assert_eq!(props.get("encoder"), Some(&Amf0Value::Utf8String("Lavf".to_owned())));
    }
}
