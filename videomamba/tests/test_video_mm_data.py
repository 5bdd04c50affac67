"""video_mm data: annotation formats, datasets, media reading, text cleaning, interleaving, metrics."""

import json

import numpy as np
import pytest
from PIL import Image

from videomamba.video_mm.data.datasets import (
    CaptionDataset,
    MediaSource,
    MultipleChoiceDataset,
    QADataset,
    RetrievalEvalDataset,
    load_annotations,
    multiple_choice_collate,
    qa_train_collate,
)
from videomamba.video_mm.data.loader import MediaInterleavedLoader, build_loader
from videomamba.video_mm.data.media import ClipTransform, MediaReader
from videomamba.video_mm.data.text import load_tokenizer, pre_text
from videomamba.video_mm.evaluation import normalize_answer, retrieval_metrics, vqa_accuracy
from videomamba.video_mm.synthetic import COLOURS, make_synthetic_data, square_frames, write_video

pytest.importorskip("av")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_synthetic_data(tmp_path_factory.mktemp("synthetic"), train_per_class=1, test_per_class=1)


def reader(train=False, frames=4, sample_type="middle", max_seconds=None):
    return MediaReader(ClipTransform(32, train), frames, sample_type, max_seconds=max_seconds)


def source(data, name, media_type="video", folder="msrvtt", kind="anno_downstream"):
    return MediaSource(str(data["root"] / kind / f"{name}.json"), str(data["root"] / "media" / folder), media_type)


def test_pre_text():
    assert pre_text("A <person> (in red) jumps -- over/the fence!!  ") == "a person in red jumps over the fence"
    assert pre_text("It's a dog; really?", max_words=2) == "its a"


def test_tokenizer_reads_only_local_folders(data, tmp_path):
    tokenizer = load_tokenizer(data["bert"])
    ids = tokenizer("a red square moving up").input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "a", "red", "square", "moving", "up", "[SEP]"]
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}: no vocab.txt"):
        load_tokenizer(tmp_path)


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "annotation file not found"),
        ("[{", "not valid JSON"),
        ('{"video": "a.mp4"}', "expected a JSON list"),
        ('[{"image": "a.png", "caption": "x"}]', "entry 0: no 'video' path"),
        ('[{"video": "a.mp4", "caption": "x"}, {"video": "b.mp4"}]', r"entry 1: missing \['caption'\]"),
    ],
)
def test_annotation_errors_name_file_and_entry(tmp_path, content, message):
    path = tmp_path / "anno.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises((ValueError, FileNotFoundError), match=message) as error:
        load_annotations(MediaSource(str(path), str(tmp_path), "video"))
    assert str(path) in str(error.value)


def test_caption_datasets_share_positives_per_video_for_retrieval(data):
    sources = [source(data, "msrvtt_ret_train9k")]
    per_media = CaptionDataset(sources, reader(train=True), positives="media")
    per_sample = CaptionDataset(sources, reader(train=True), positives="sample")
    assert len(per_media) == 16  # 8 videos x 2 captions
    clip, caption, positive = per_media[1]
    assert clip.shape == (3, 4, 32, 32) and caption == "the red block goes up"
    assert [per_media.pairs[i][2] for i in range(4)] == [0, 0, 1, 1]
    assert [per_sample.pairs[i][2] for i in range(4)] == [0, 1, 2, 3]
    images = CaptionDataset([source(data, "cc3m_train", "image", "cc3m", "anno_pretrain")], reader(train=True))
    clip, caption, _ = images[0]
    assert clip.shape == (3, 1, 32, 32) and caption == "a photo of a red square"


def test_retrieval_eval_dataset_and_paragraphs(data, tmp_path):
    entries = [{"video": "a.mp4", "caption": ["one two", "three"]}, {"video": "b.mp4", "caption": "four"}]
    (tmp_path / "ret.json").write_text(json.dumps(entries))
    split = MediaSource(str(tmp_path / "ret.json"), str(tmp_path), "video")
    dataset = RetrievalEvalDataset(split, reader())
    assert dataset.texts == ["one two", "three", "four"]
    assert dataset.text_to_media == [0, 0, 1] and dataset.media_to_texts == [[0, 1], [2]]
    paragraphs = RetrievalEvalDataset(split, reader(), paragraph=True)
    assert paragraphs.texts == ["one two three", "four"] and paragraphs.media_to_texts == [[0], [1]]
    # The videos do not exist: evaluation keeps their place with black clips.
    clip, index = dataset[1]
    assert index == 1 and clip.shape == (3, 4, 32, 32) and not clip.any()
    assert dataset.unreadable.num_failures == 1


def test_unreadable_training_media_is_replaced(data, tmp_path):
    entries = [{"video": "missing.mp4", "caption": "gone"}, {"video": "test_red_up_0.mp4", "caption": "there"}]
    (tmp_path / "train.json").write_text(json.dumps(entries))
    dataset = CaptionDataset([MediaSource(str(tmp_path / "train.json"), str(data["videos"]), "video")], reader(True))
    clip, caption, positive = dataset[0]
    assert caption == "there" and positive == 1 and dataset.unreadable.num_failures == 1


def test_first_seconds_only_and_frame_folders(tmp_path):
    frames = np.stack([np.full((32, 32, 3), 6 * i, dtype=np.uint8) for i in range(40)])
    write_video(tmp_path / "long.mp4", frames, fps=2)  # 20 seconds
    trimmed = reader(frames=4, max_seconds=5.0)
    indices = np.round(trimmed.read_frames(str(tmp_path / "long.mp4"), "video")[:, 0, 0, 0] / 6)
    assert indices.max() < 10 and len(indices) == 4  # within the first 5 s = 10 frames
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):
        Image.fromarray(frames[i]).save(folder / f"img_{i + 1}.png")  # img_10 sorts after img_9
    read = reader(frames=3).read_frames(str(folder), "video")
    assert (read[:, 0, 0, 0] // 6).tolist() == [2, 6, 10]


def test_colours_survive_decoding(data):
    clip = reader().read_frames(str(data["videos"] / "test_blue_down_0.mp4"), "video")
    assert clip.shape == (4, 32, 32, 3)
    assert np.abs(clip[0].reshape(-1, 3).max(0).astype(int) - np.array(COLOURS["blue"])).max() < 20
    # The square moves down: its rows (where blue dominates) start lower in later frames.
    rows = [np.nonzero(frame[:, :, 2].astype(int) - frame[:, :, 0] > 100)[0].min() for frame in clip]
    assert rows == sorted(rows) and rows[-1] > rows[0]


def test_square_frames_move_in_the_named_direction():
    frames = square_frames("red", "up", np.random.default_rng(0), size=32, num_frames=5)
    tops = [np.nonzero(frame[:, :, 0] > 200)[0].min() for frame in frames]
    assert tops == sorted(tops, reverse=True) and tops[0] == 16 and tops[-1] == 0


def test_multiple_choice_and_qa_datasets(data):
    mc = MultipleChoiceDataset(source(data, "msrvtt_mc_test"), reader())
    clip, options, answer = mc[3]
    assert len(options) == 5 and options[answer] == "a green square moving down"
    clips, batch_options, answers = multiple_choice_collate([mc[0], mc[1]])
    assert clips.shape == (2, 3, 4, 32, 32) and batch_options[1] == mc.options[1] and answers.tolist() == mc.answers[:2]
    qa = QADataset([source(data, "msrvtt_qa_train")], reader(True), train=True)
    clip, question, answers, weights = qa[1]
    assert question == "where does the square go" and answers == ["up"] and weights == [1.0]
    _, questions, flat_answers, flat_weights, counts = qa_train_collate([qa[0], qa[1]])
    assert flat_answers == ["red", "up"] and counts == [1, 1] and flat_weights.tolist() == [1.0, 1.0]
    evaluation = QADataset([source(data, "msrvtt_qa_test")], reader(), train=False)
    assert evaluation[0][1:] == ("what colour is the square", 100000)


def test_interleaved_loader_is_deterministic_and_proportional():
    loaders = {
        "video": build_loader(list(range(12)), 2, 0, train=True),
        "image": build_loader(list(range(100, 106)), 2, 0, train=True),
    }
    interleaved = MediaInterleavedLoader(loaders, seed=3)
    assert len(interleaved) == 9
    order = interleaved.step_order()
    assert sorted(order) == ["image"] * 3 + ["video"] * 6
    assert interleaved.step_order() == order  # what every rank computes (and rank 0 broadcasts)
    interleaved.set_epoch(1)
    assert sorted(interleaved.step_order()) == sorted(order)
    for media_type, batch in interleaved:
        assert (batch >= 100).all() if media_type == "image" else (batch < 100).all()


def test_retrieval_metrics_by_hand():
    # 3 videos, 4 texts: video 0 has texts 0 and 1.
    media_to_texts, text_to_media = [[0, 1], [2], [3]], [0, 0, 1, 2]
    score_v2t = np.array(
        [
            [0.1, 0.9, 0.0, 0.5],  # best caption (1) ranks first
            [0.0, 0.0, 0.2, 0.7],  # its caption ranks second
            [0.0, 0.0, 0.0, 0.0],  # all tied: counts as last (rank 4)
        ]
    )
    results = retrieval_metrics(score_v2t, score_v2t.T, media_to_texts, text_to_media)
    assert results["txt_r1"] == pytest.approx(100 / 3) and results["txt_r5"] == 100.0
    # Texts: 0 -> video 0 first; 1 -> video 0 first; 2 -> video 1 first; 3 -> video 2 ranks 3rd of 3.
    assert results["img_r1"] == 75.0 and results["img_r5"] == 100.0
    assert results["r_mean"] == pytest.approx((results["txt_r_mean"] + results["img_r_mean"]) / 2)


def test_vqa_accuracy():
    assert normalize_answer("The Two dogs!") == "2 dogs"
    assert vqa_accuracy("two dogs", ["2 dogs", "2 dogs", "dogs", "2 dogs"]) == 1.0
    assert vqa_accuracy("dogs", ["2 dogs", "2 dogs", "dogs", "2 dogs"]) == pytest.approx(1 / 3)
    assert vqa_accuracy("red", ["red"]) == 1.0 and vqa_accuracy("blue", ["red"]) == 0.0
    with pytest.raises(ValueError):
        vqa_accuracy("x", [])
