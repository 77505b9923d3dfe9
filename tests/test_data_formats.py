"""Each annotation reader on a tiny fixture written here."""

import json
import re

import pytest

from zeroi2v.data import FORMATS, Annotation, Sample, read_annotation


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_mmaction_video_list_with_class_file_and_spaces(tmp_path):
    lst = write(tmp_path / "train.txt", "a/x.mp4 1\n\nmy dir/y z.mp4 0\n")
    names = write(tmp_path / "classes.txt", "walk\nrun\n")
    ann = read_annotation("mmaction", lst, classes=names)
    assert ann.samples == [Sample("a/x.mp4", 1), Sample("my dir/y z.mp4", 0)]
    assert ann.classes == ["walk", "run"]
    assert read_annotation("mmaction", lst).classes == ["0", "1"]


def test_mmaction_rawframe_list(tmp_path):
    lst = write(tmp_path / "val.txt", "frames/v1 120 2\nframes/v2 33 0\n")
    ann = read_annotation("mmaction", lst, rawframes=True)
    assert ann.samples == [Sample("frames/v1", 2, 120), Sample("frames/v2", 0, 33)]
    with pytest.raises(ValueError, match="val.txt:1"):
        read_annotation("mmaction", write(tmp_path / "val.txt", "only_a_path\n"))


def test_mmaction_label_outside_classes_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="outside"):
        read_annotation("mmaction", write(tmp_path / "l.txt", "a.mp4 5\n"), classes=["a", "b"])


def test_kinetics_csv_class_folders_or_flat(tmp_path):
    csv = write(tmp_path / "k.csv", "label,youtube_id,time_start,time_end,split\n"
                "riding a bike,abc123,7,17,val\nabseiling,zzz,0,10,val\n")
    ann = read_annotation("kinetics", csv)
    assert ann.classes == ["abseiling", "riding a bike"]
    assert ann.samples == [Sample("riding a bike/abc123_000007_000017.mp4", 1),
                           Sample("abseiling/zzz_000000_000010.mp4", 0)]
    flat = read_annotation("kinetics", csv, class_folders=False, classes=["riding a bike", "abseiling"])
    assert flat.samples[0] == Sample("abc123_000007_000017.mp4", 0)


def test_ssv2_templates_map_to_labels(tmp_path):
    labels = write(tmp_path / "labels.json", json.dumps({"Putting something on something": "1",
                                                         "Holding something": "0"}))
    split = write(tmp_path / "validation.json", json.dumps([
        {"id": "42", "label": "putting a cup on a table", "template": "Putting [something] on [something]",
         "placeholders": ["a cup", "a table"]},
        {"id": "7", "label": "holding a pen", "template": "Holding [something]", "placeholders": ["a pen"]}]))
    ann = read_annotation("ssv2", labels, split)
    assert ann.classes == ["Holding something", "Putting something on something"]
    assert ann.samples == [Sample("42.webm", 1), Sample("7.webm", 0)]


def test_ucf101_train_and_test_lists(tmp_path):
    write(tmp_path / "classInd.txt", "1 ApplyEyeMakeup\n2 HandstandPushups\n")
    write(tmp_path / "trainlist01.txt", "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                        "HandstandPushups/v_HandStandPushups_g08_c01.avi 2\n")
    write(tmp_path / "testlist01.txt", "HandStandPushups/v_HandStandPushups_g01_c01.avi\n")
    train = read_annotation("ucf101", tmp_path, split=1, subset="train")
    assert train.classes == ["ApplyEyeMakeup", "HandstandPushups"]
    assert [s.label for s in train.samples] == [0, 1]
    test = read_annotation("ucf101", tmp_path, subset="test")
    assert test.samples == [Sample("HandStandPushups/v_HandStandPushups_g01_c01.avi", 1)]


def test_hmdb51_split_files(tmp_path):
    write(tmp_path / "wave_test_split1.txt", "w1.avi 1\nw2.avi 2\nw3.avi 0\n")
    write(tmp_path / "clap_test_split1.txt", "c1.avi 2 \nc2.avi 1 \n")
    write(tmp_path / "clap_test_split2.txt", "c1.avi 1\n")
    train = read_annotation("hmdb51", tmp_path, split=1, subset="train")
    assert train.classes == ["clap", "wave"]
    assert train.samples == [Sample("clap/c2.avi", 0), Sample("wave/w1.avi", 1)]
    test = read_annotation("hmdb51", tmp_path, split=1, subset="test")
    assert test.samples == [Sample("clap/c1.avi", 0), Sample("wave/w2.avi", 1)]


def test_diving48_json_with_and_without_vocab(tmp_path):
    lst = write(tmp_path / "Diving48_V2_test.json", json.dumps([
        {"vid_name": "_8Vy3dlHg2w_00000", "label": 1, "start_frame": 0, "end_frame": 60},
        {"vid_name": "abc_00003", "label": 0, "start_frame": 0, "end_frame": 40}]))
    vocab = write(tmp_path / "vocab.json", json.dumps([["Back", "15som", "05Twis", "FREE"],
                                                       ["Inward", "25som", "NoTwis", "PIKE"]]))
    ann = read_annotation("diving48", lst, vocab_json=vocab)
    assert ann.samples[0] == Sample("_8Vy3dlHg2w_00000.mp4", 1)
    assert ann.classes == ["Back 15som 05Twis FREE", "Inward 25som NoTwis PIKE"]
    assert read_annotation("diving48", lst).classes == ["0", "1"]


def test_folder_per_class(tmp_path):
    for rel in ["b/2.mp4", "b/1.avi", "a/x.mp4", "a/notes.txt"]:
        write(tmp_path / rel, "")
    ann = read_annotation("folder", tmp_path)
    assert isinstance(ann, Annotation) and ann.classes == ["a", "b"]
    assert ann.samples == [Sample("a/x.mp4", 0), Sample("b/1.avi", 1), Sample("b/2.mp4", 1)]


def test_unknown_format_names_the_known_ones():
    with pytest.raises(ValueError, match="unknown annotation format 'avi'.*kinetics"):
        read_annotation("avi", "x")
    assert {"mmaction", "kinetics", "ssv2", "ucf101", "hmdb51", "diving48", "folder"} <= set(FORMATS)


@pytest.mark.parametrize("fmt, name, text, extra", [
    ("mmaction", "train.txt", "ok.mp4 0\ncaf\u00e9.mp4 1\n", {}),
    ("kinetics", "k400.csv", "label,youtube_id,time_start,time_end,split\ncaf\u00e9,abc,0,10,val\n", {}),
    ("diving48", "Diving48_V2_test.json", '[{"vid_name": "caf\u00e9", "label": 0}]', {}),
])
def test_a_latin1_annotation_names_the_file_and_says_it_is_not_utf8(tmp_path, fmt, name, text, extra):
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ValueError) as e:
        read_annotation(fmt, path, **extra)
    msg = str(e.value)
    assert msg.startswith(str(path)) and "not UTF-8" in msg and "save it as UTF-8" in msg, msg


def test_a_latin1_class_file_names_the_file(tmp_path):
    lst = write(tmp_path / "train.txt", "a.mp4 0\n")
    names = tmp_path / "classes.txt"
    names.write_bytes("caf\u00e9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(names))}, line 1: not UTF-8"):
        read_annotation("mmaction", lst, classes=names)


def test_utf8_with_byte_order_mark_reads(tmp_path):
    lst = tmp_path / "train.txt"
    lst.write_bytes("\ufeffcaf\u00e9.mp4 0\n".encode("utf-8"))
    assert read_annotation("mmaction", lst).samples == [Sample("caf\u00e9.mp4", 0)]


def test_broken_json_csv_and_entries_name_the_file(tmp_path):
    bad_json = write(tmp_path / "Diving48_V2_test.json", '[{"vid_name": "a", "label": 0},')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(bad_json))}, line 1, column \d+: not valid JSON"):
        read_annotation("diving48", bad_json)
    no_label = write(tmp_path / "d.json", '[{"vid_name": "a"}]')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(no_label))}: entry 0 .*'label'"):
        read_annotation("diving48", no_label)
    labels = write(tmp_path / "labels.json", '{"Holding something": "0"}')
    split = write(tmp_path / "validation.json", '[{"id": "7"}]')
    with pytest.raises(ValueError, match=rf"^{re.escape(str(split))}: entry 0 .*'template'"):
        read_annotation("ssv2", labels, split)
    csv = write(tmp_path / "k.csv", "name,id\nx,y\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(str(csv))}: no column\(s\) label, youtube_id"):
        read_annotation("kinetics", csv)
