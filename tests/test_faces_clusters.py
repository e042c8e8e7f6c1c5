import numpy as np
import pytest
from PIL import Image

from detector.cluster import cluster_faces, connected_components, min_cluster_size
from detector.embed import FaceEmbedder
from detector.faces import FaceDetector, crop_square, square_box

from .conftest import shared


def rgb(name: str) -> np.ndarray:
    return np.asarray(Image.open(shared("media", "unlabeled", name)).convert("RGB"))


@pytest.fixture(scope="module")
def detector():
    return FaceDetector("cpu").load()


@pytest.fixture(scope="module")
def embedder():
    return FaceEmbedder().load()


def test_square_box_margin():
    x1, y1, x2, y2 = square_box((100, 50, 200, 250), 1.3)  # 100 wide, 200 tall
    assert x2 - x1 == y2 - y1 == 260
    assert (x1 + x2) / 2 == pytest.approx(150, abs=1) and (y1 + y2) / 2 == pytest.approx(150, abs=1)


def test_crop_square_pads_outside_the_frame():
    frame = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_square(frame, (0, 0, 40, 40), 1.5)  # square of 60 centred on (20, 20)
    assert crop.shape == (60, 60, 3)
    assert (crop[:10, :10] == 0).all() and (crop[-10:, -10:] == 200).all()


def test_mtcnn_finds_real_faces(detector):
    single = detector.detect([rgb("angelina_jolie.jpg")])[0]
    assert len(single) == 1 and single[0].prob > 0.99
    group = detector.detect([rgb("multiface.jpg")])[0]
    assert len(group) >= 4
    blank = detector.detect([np.full((300, 400, 3), 127, np.uint8)])[0]
    assert blank == []


def test_detection_on_downscaled_frames_maps_boxes_back(detector):
    img = rgb("obama.jpg")
    full = FaceDetector("cpu", max_side=4000).load().detect([img])[0][0].box
    small = FaceDetector("cpu", max_side=300).load().detect([img])[0][0].box
    side = full[2] - full[0]
    assert all(abs(a - b) < 0.15 * side for a, b in zip(full, small))


def test_connected_components_and_size_filter():
    pts = np.array([[0, 0], [0.4, 0], [0.8, 0], [5, 5], [5.2, 5], [9, 9]], dtype=np.float32)
    labels = connected_components(pts, 0.5)
    assert labels[0] == labels[1] == labels[2]  # a chain joins through its middle
    assert labels[3] == labels[4] != labels[0] and len(set(labels)) == 3
    kept, dropped = cluster_faces(pts, 0.5, sampled_frames=10, fraction=0.2)  # need >= 2 faces
    assert kept == [[0, 1, 2], [3, 4]] and dropped == 1
    assert min_cluster_size(64, 0.2) == 13 and min_cluster_size(1, 0.2) == 1


def test_obama_and_biden_form_two_clusters(detector, embedder):
    names = ["obama.jpg", "obama2.jpg", "obama3.jpg", "biden.jpg"]
    embs = []
    for n in names:
        img = rgb(n)
        dets = detector.detect([img])[0]
        assert len(dets) == 1, n
        embs.append(embedder.embed(img, [dets[0].box])[0])
    from detector.settings import DetectorSettings

    kept, dropped = cluster_faces(np.stack(embs), DetectorSettings().cluster_max_distance, sampled_frames=1)
    assert sorted(map(sorted, kept)) == [[0, 1, 2], [3]] and dropped == 0


def test_two_people_in_one_photo_are_two_clusters(detector, embedder):
    img = rgb("two_people.jpg")
    dets = detector.detect([img])[0]
    emb = embedder.embed(img, [d.box for d in dets])
    assert emb.shape == (2, 128)
    kept, _ = cluster_faces(emb, 0.55, sampled_frames=1)
    assert len(kept) == 2
