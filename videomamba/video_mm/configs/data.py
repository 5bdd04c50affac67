"""Data roots and the corpus registry.

Every corpus is a dict: the annotation JSON, the folder its media paths are relative to, and the
media type. Composite corpora are lists of corpora. Paths hang off ``data_dir``, so one override
(`data_dir /my/data`) moves them all; any single one can be overridden too
(`available_corpus.cc3m.media_root /fast/cc3m`).
"""

data_dir = "data/video_mm"
anno_root_pt = "${data_dir}/anno_pretrain"
anno_root_downstream = "${data_dir}/anno_downstream"
media_root = "${data_dir}/media"


def _corpus(anno: str, media: str, media_type: str) -> dict:
    return dict(anno_path=anno, media_root=media, media_type=media_type)


def _pretrain(name: str, media_type: str, anno_name: str | None = None) -> dict:
    return _corpus(f"${{anno_root_pt}}/{anno_name or name}.json", f"${{media_root}}/{name}", media_type)


def _downstream(anno_name: str, media_folder: str, media_type: str = "video") -> dict:
    return _corpus(f"${{anno_root_downstream}}/{anno_name}.json", f"${{media_root}}/{media_folder}", media_type)


available_corpus = dict(
    # pretraining: image-text and video-text pairs
    cc3m=_pretrain("cc3m", "image", "cc3m_train"),
    cc12m=_pretrain("cc12m", "image", "cc12m_train"),
    sbu=_pretrain("sbu", "image"),
    vg=_pretrain("vg", "image"),
    coco=_pretrain("coco", "image"),
    webvid=_pretrain("webvid", "video", "webvid_train"),
    # NOTE: the original's path for WebVid-10M lacked its f-string prefix, so the 25M corpus pointed at
    # a literal "{anno_root_pt}/..." file; here it is interpolated like the others.
    webvid_10m=_pretrain("webvid_10m", "video", "webvid10m_train"),
    # retrieval
    msrvtt_1k_test=_downstream("msrvtt_test1k", "msrvtt"),
    msrvtt_ret_train9k=_downstream("msrvtt_ret_train9k", "msrvtt"),
    msrvtt_ret_test1k=_downstream("msrvtt_ret_test1k", "msrvtt"),
    didemo_ret_train=_downstream("didemo_ret_train", "didemo"),
    didemo_ret_val=_downstream("didemo_ret_val", "didemo"),
    didemo_ret_test=_downstream("didemo_ret_test", "didemo"),
    anet_ret_train=_downstream("anet_ret_train", "activitynet"),
    anet_ret_val=_downstream("anet_ret_val", "activitynet"),
    lsmdc_ret_train=_downstream("lsmdc_ret_train", "lsmdc"),
    lsmdc_ret_test_1000=_downstream("lsmdc_ret_test_1000", "lsmdc"),
    msvd_ret_train=_downstream("msvd_ret_train", "msvd"),
    msvd_ret_test=_downstream("msvd_ret_test", "msvd"),
    # multiple choice and question answering
    msrvtt_mc_test=_downstream("msrvtt_mc_test", "msrvtt"),
    msrvtt_qa_train=_downstream("msrvtt_qa_train", "msrvtt"),
    msrvtt_qa_val=_downstream("msrvtt_qa_val", "msrvtt"),
    msrvtt_qa_test=_downstream("msrvtt_qa_test", "msrvtt"),
)
available_corpus["data_5m"] = ["${available_corpus.webvid}", "${available_corpus.cc3m}"]
available_corpus["data_17m"] = [
    "${available_corpus.webvid}",
    "${available_corpus.cc3m}",
    "${available_corpus.coco}",
    "${available_corpus.vg}",
    "${available_corpus.sbu}",
    "${available_corpus.cc12m}",
]
available_corpus["data_25m"] = [
    "${available_corpus.webvid_10m}",
    "${available_corpus.cc3m}",
    "${available_corpus.coco}",
    "${available_corpus.vg}",
    "${available_corpus.sbu}",
    "${available_corpus.cc12m}",
]
# The answer vocabulary of MSRVTT-QA (a JSON list of strings), ranked at evaluation.
msrvtt_qa_answer_list = "${anno_root_downstream}/msrvtt_qa_answer_list.json"
