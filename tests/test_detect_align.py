"""MTCNN detection and 5-point alignment on real LFW photos."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from facegnet.align import TEMPLATE, align_face, central_landmarks, similarity_transform, transform_points
from facegnet.detection.detector import Detector
from facegnet.io import load_image
from tests.conftest import lfw_photo

SINGLE_FACE = [("Aaron_Peirsol", 1), ("Aaron_Sorkin", 1), ("George_W_Bush", 1), ("Serena_Williams", 1),
               ("Colin_Powell", 1), ("Angelina_Jolie", 1)]


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    return [load_image(lfw_photo(*p)) for p in SINGLE_FACE]


def _check_face_geometry(face, shape):
    x1, y1, x2, y2 = face.box
    assert 0 <= x1 < x2 <= shape[1] + 5 and 0 <= y1 < y2 <= shape[0] + 5
    assert face.score > 0.95
    (lex, ley), (rex, rey), (nx, ny), (lmx, lmy), (rmx, rmy) = face.landmarks
    assert lex < nx < rex and lmx < rmx  # image-left eye first, as the template expects
    assert max(ley, rey) < ny < min(lmy, rmy)  # eyes above the nose above the mouth
    assert x1 <= nx <= x2 and y1 <= ny <= y2


def test_one_face_per_lfw_photo(detector, photos):
    for photo in photos:
        faces = detector.detect(photo)
        assert len(faces) == 1
        _check_face_geometry(faces[0], photo.shape)
        assert 60 < faces[0].size < 160  # LFW faces are about 100 px


def test_batch_matches_single(detector, photos):
    single = [detector.detect(p) for p in photos[:3]]
    batched = detector.detect_batch(photos[:3] + [lfw_photo(*SINGLE_FACE[0])])
    assert len(batched) == 4
    for a, b in zip(single, batched):
        assert len(a) == len(b) == 1
        assert np.allclose(a[0].box, b[0].box, atol=1.0)
    assert np.allclose(batched[3][0].box, single[0][0].box, atol=1.0)  # a path input, same image


def test_group_photo_finds_every_face_largest_first(detector, photos):
    small = np.asarray(Image.fromarray(photos[2]).resize((180, 180)))
    canvas = np.zeros((250, 250 + 250 + 180, 3), dtype=np.uint8)
    canvas[:, :250], canvas[:, 250:500], canvas[:180, 500:] = photos[0], photos[1], small
    faces = detector.detect(canvas)
    assert len(faces) == 3
    assert [f.area for f in faces] == sorted((f.area for f in faces), reverse=True)
    centres = sorted(float((f.box[0] + f.box[2]) / 2) for f in faces)
    assert centres[0] < 250 < centres[1] < 500 < centres[2]


def test_large_image_is_downscaled_and_mapped_back(photos):
    detector = Detector(max_side=640)
    big = np.asarray(Image.fromarray(photos[0]).resize((1500, 1500), Image.BILINEAR))
    small_faces = detector.detect(photos[0])
    big_faces = detector.detect(big)
    assert len(big_faces) == 1
    scale = 1500 / 250
    assert np.allclose(big_faces[0].box, small_faces[0].box * scale, atol=0.06 * big_faces[0].size)
    assert np.allclose(big_faces[0].landmarks, small_faces[0].landmarks * scale, atol=0.04 * big_faces[0].size)


def test_min_face_size_and_tiny_images(photos):
    assert Detector(min_face_size=200).detect(photos[0]) == []  # the ~95 px face is below the minimum
    assert Detector().detect(np.zeros((8, 8, 3), dtype=np.uint8)) == []  # smaller than any face: no crash
    blank = np.tile(np.linspace(0, 255, 300, dtype=np.uint8)[None, :, None], (300, 1, 3))
    assert Detector().detect(blank) == []
    strict = Detector(thresholds=(0.6, 0.7, 0.99999999))
    assert strict.detect(photos[0]) == [] or strict.detect(photos[0])[0].score >= 0.99999999


def test_grey_and_rotated_photos_are_detected(detector, tmp_path, photos):
    grey = Image.fromarray(photos[0]).convert("L")
    grey.save(tmp_path / "grey.jpg")
    assert len(detector.detect(tmp_path / "grey.jpg")) == 1
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, shown upright
    Image.fromarray(photos[0]).rotate(90, expand=True).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    faces = detector.detect(tmp_path / "phone.jpg")
    assert len(faces) == 1
    _check_face_geometry(faces[0], (250, 250))


# -- alignment -------------------------------------------------------------------------------------------------


def test_similarity_transform_recovers_an_exact_similarity():
    angle, scale, shift = np.deg2rad(17.0), 2.3, np.array([140.0, 61.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = TEMPLATE @ (scale * rotation).T + shift
    matrix = similarity_transform(landmarks)
    assert np.abs(transform_points(matrix, landmarks) - TEMPLATE).max() < 1e-9
    assert np.isclose(np.linalg.det(matrix[:, :2]), scale**-2)


def test_warped_landmarks_on_real_photos(detector, photos):
    """On real photos: the warped landmarks sit on the template (centroid within 1 px, eyes within 5 px),
    and the pixels really move where the transform says (a dot painted on each landmark lands within 1 px)."""
    for photo in photos:
        face = detector.detect(photo)[0]
        matrix = similarity_transform(face.landmarks)
        warped = transform_points(matrix, face.landmarks)
        # A similarity fits five real landmarks only in the least-squares sense: the centroid is exact,
        # single points (the nose above all, with head pose) are off by a few pixels.
        assert np.linalg.norm(warped.mean(axis=0) - TEMPLATE.mean(axis=0)) < 1.0
        assert np.linalg.norm(warped[:2] - TEMPLATE[:2], axis=1).max() < 5.0
        assert np.linalg.norm(warped - TEMPLATE, axis=1).max() < 10.0
        # Swapping the eyes (the wrong landmark order) would be far worse than the true fit.
        swapped = face.landmarks[[1, 0, 2, 4, 3]]
        wrong = transform_points(similarity_transform(swapped), swapped)
        assert np.linalg.norm(wrong - TEMPLATE, axis=1).mean() > 3 * np.linalg.norm(warped - TEMPLATE, axis=1).mean()
        # Paint a bright dot on each landmark of a black canvas, warp it like the photo, find the dots.
        for point, expected in zip(face.landmarks, warped):
            canvas = np.zeros_like(photo)
            yy, xx = np.mgrid[: photo.shape[0], : photo.shape[1]]
            canvas[..., 0] = (255 * np.exp(-((xx - point[0]) ** 2 + (yy - point[1]) ** 2) / 8.0)).astype(np.uint8)
            crop = align_face(canvas, face.landmarks)[..., 0].astype(np.float64)
            ys, xs = np.mgrid[:112, :112]
            found = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
            assert np.linalg.norm(found - expected) < 1.0


def test_aligned_crop_is_the_face(detector, photos):
    face = detector.detect(photos[0])[0]
    crop = align_face(photos[0], face.landmarks)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert detector.detect(np.pad(crop, ((40, 40), (40, 40), (0, 0))))  # MTCNN still sees a face in it


def test_black_border_outside_the_photo():
    photo = np.full((120, 120, 3), 200, dtype=np.uint8)
    # A face whose landmarks sit at the photo's corner: much of the crop lies outside the photo.
    landmarks = TEMPLATE * 0.5 - 20
    crop = align_face(photo, landmarks)
    assert (crop[0, 0] == 0).all() and (crop[-1, -1] == 200).all()


def test_central_landmarks_fallback():
    points = central_landmarks(250, 250)
    assert points.shape == (5, 2)
    assert np.allclose(points.mean(axis=0), [125 - 0.28 * 250 + TEMPLATE.mean(0)[0] * 0.56 * 250 / 112,
                                             125 - 0.28 * 250 + TEMPLATE.mean(0)[1] * 0.56 * 250 / 112])


# -- the ONNX Runtime engine and facenet-pytorch's contract ------------------------------------------------------


def _reference_faces(mtcnn, image: np.ndarray, min_size: float) -> list[tuple[np.ndarray, float, np.ndarray]]:
    """Faces from facenet-pytorch's public ``MTCNN.detect(..., landmarks=True)``, largest first, at least min_size."""
    boxes, probs, points = mtcnn.detect(image, landmarks=True)
    if boxes is None:
        return []
    boxes, points = np.asarray(boxes, dtype=np.float32), np.asarray(points, dtype=np.float32)
    faces = [(b, float(p), pt) for b, p, pt in zip(boxes, probs, points)
             if min(b[2] - b[0], b[3] - b[1]) >= min_size]
    return sorted(faces, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))


def test_onnx_engine_finds_what_facenet_pytorch_finds_on_lfw(photos):
    """The fast path changes nothing: same faces, boxes, landmarks and scores as facenet-pytorch's MTCNN.detect."""
    from facenet_pytorch import MTCNN

    from tests.conftest import LFW_IMAGES

    paths = sorted(LFW_IMAGES.glob("*/*_0001.jpg"))[::350][:16]
    if len(paths) < 16:
        pytest.skip("LFW photos not available")
    images = [load_image(p) for p in paths]
    group = np.zeros((250, 500, 3), dtype=np.uint8)
    group[:, :250], group[:, 250:] = photos[0], photos[1]
    images.append(group)
    reference = MTCNN(keep_all=True, min_face_size=20, thresholds=[0.6, 0.7, 0.7], factor=0.709, device="cpu")
    detector = Detector(engine="onnx")
    assert detector.engine == "onnx"
    found = detector.detect_batch(images[:8]) + [detector.detect(image) for image in images[8:]]
    total = 0
    for image, faces in zip(images, found):
        expected = _reference_faces(reference, image, detector.min_face_size)
        assert len(faces) == len(expected)
        for face, (box, prob, points) in zip(faces, expected):
            assert np.allclose(face.box, box, atol=0.02) and np.allclose(face.landmarks, points, atol=0.02)
            assert abs(face.score - prob) < 1e-4
        total += len(faces)
    assert total >= len(images)  # every photo has its face


def test_the_internal_contract_of_facenet_pytorch_detect_face():
    """detect.py calls facenet-pytorch's detect_face with its own networks: pin what that relies on."""
    import inspect

    import torch
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet
    from facenet_pytorch.models.utils.detect_face import detect_face

    from facegnet.detection.mtcnn_onnx import ort_networks

    assert list(inspect.signature(detect_face).parameters) == [
        "imgs", "minsize", "pnet", "rnet", "onet", "threshold", "factor", "device"]
    rng = np.random.default_rng(0)
    inputs = {"pnet": (2, 3, 31, 47), "rnet": (5, 3, 24, 24), "onet": (5, 3, 48, 48)}
    shapes = {"pnet": [(2, 4, 11, 19), (2, 2, 11, 19)], "rnet": [(5, 4), (5, 2)], "onet": [(5, 4), (5, 10), (5, 2)]}
    for name, torch_net, ort_net in zip(inputs, (PNet(), RNet(), ONet()), ort_networks(threads=1)):
        x = torch.from_numpy(rng.uniform(-1, 1, size=inputs[name]).astype(np.float32))
        with torch.inference_mode():
            expected = torch_net.eval()(x)
        got = ort_net.infer(x.numpy())
        assert [tuple(t.shape) for t in expected] == shapes[name] == [tuple(t.shape) for t in got]
        for e, g in zip(expected, got):
            assert np.allclose(e.numpy(), g, atol=1e-4)
