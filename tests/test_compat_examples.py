"""face_recognition's example programs, their flow rewritten here, run through facegnet.compat.face_recognition.

Each test calls the compat API exactly as one of face_recognition's examples calls face_recognition (same
functions, arguments and control flow), on LFW photos instead of the examples' own: the known people of each
example are LFW people, its "unknown" photos are other LFW photos of them (and of strangers), its two-person photo
is two LFW photos side by side and its video is a short clip written here from LFW photos. Each asserts that the
right people are named. (The examples themselves, run on their own photos with only the import line changed, are
reported in docs/migrating-from-face_recognition.md.)
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import lfw_photo
from PIL import Image, ImageDraw

ASSETS = Path(__file__).resolve().parents[1] / "facegnet" / "assets"


@pytest.fixture(scope="module")
def face_recognition(recognizer):
    """``import facegnet.compat.face_recognition as face_recognition``, on the test session's recognizer."""
    import facegnet.compat.face_recognition as module

    module.use_recognizer(recognizer)
    return module


@pytest.fixture(scope="module")
def files():
    """Photo files: the known people of the examples and the photos to check."""
    return {
        "powell_1": ASSETS / "colin_powell_1.jpg",
        "powell_2": ASSETS / "colin_powell_2.jpg",
        "bush_1": lfw_photo("George_W_Bush", 1),
        "bush_2": lfw_photo("George_W_Bush", 2),
        "serena_1": ASSETS / "serena_williams_1.jpg",
        "serena_2": ASSETS / "serena_williams_2.jpg",
        "chavez": lfw_photo("Hugo_Chavez", 1),
        "putin": lfw_photo("Vladimir_Putin", 1),
    }


@pytest.fixture(scope="module")
def two_people(files, tmp_path_factory):
    """A photo of two people: Colin Powell on the left, George W Bush on the right."""
    path = tmp_path_factory.mktemp("two-people") / "two_people.jpg"
    left, right = (np.asarray(Image.open(files[name])) for name in ("powell_2", "bush_2"))
    Image.fromarray(np.hstack([left, right])).save(path, quality=95)
    return path


def test_recognize_faces_in_pictures(face_recognition, files):
    """recognize_faces_in_pictures.py: is the unknown face one of two known people, or someone new?"""
    biden_image = face_recognition.load_image_file(str(files["powell_1"]))
    obama_image = face_recognition.load_image_file(str(files["bush_1"]))
    unknown_image = face_recognition.load_image_file(str(files["bush_2"]))

    biden_face_encoding = face_recognition.face_encodings(biden_image)[0]
    obama_face_encoding = face_recognition.face_encodings(obama_image)[0]
    unknown_face_encoding = face_recognition.face_encodings(unknown_image)[0]

    known_faces = [biden_face_encoding, obama_face_encoding]
    results = face_recognition.compare_faces(known_faces, unknown_face_encoding)

    # The example prints results[i] and `not True in results`: numpy booleans, compared here as it reads them.
    assert results[0] == False
    assert results[1] == True
    assert (not True in results) is False
    assert f"Is the unknown face a picture of Obama? {results[1]}" == \
        "Is the unknown face a picture of Obama? True"


def test_face_distance(face_recognition, files):
    """face_distance.py: distances to each known face, with a normal (0.6) and a strict (0.5) cut-off."""
    known_obama_image = face_recognition.load_image_file(str(files["bush_1"]))
    known_biden_image = face_recognition.load_image_file(str(files["powell_1"]))
    obama_face_encoding = face_recognition.face_encodings(known_obama_image)[0]
    biden_face_encoding = face_recognition.face_encodings(known_biden_image)[0]
    known_encodings = [obama_face_encoding, biden_face_encoding]

    image_to_test = face_recognition.load_image_file(str(files["bush_2"]))
    image_to_test_encoding = face_recognition.face_encodings(image_to_test)[0]
    face_distances = face_recognition.face_distance(known_encodings, image_to_test_encoding)

    lines = []
    for i, face_distance in enumerate(face_distances):
        lines.append(f"The test image has a distance of {face_distance:.2} from known image #{i}")
        lines.append(f"normal {face_distance < 0.6} strict {face_distance < 0.5}")
    assert lines[1] == "normal True strict True" and lines[3] == "normal False strict False"
    assert lines[0].startswith("The test image has a distance of 0.")


def test_find_faces_in_picture(face_recognition, files):
    """find_faces_in_picture.py: every face's location, and the face itself cut out with numpy slicing."""
    image = face_recognition.load_image_file(str(files["serena_1"]))
    face_locations = face_recognition.face_locations(image)
    assert len(face_locations) == 1
    for face_location in face_locations:
        top, right, bottom, left = face_location
        face_image = image[top:bottom, left:right]
        pil_image = Image.fromarray(face_image)
        assert pil_image.size == (right - left, bottom - top) and min(pil_image.size) >= 80
        # The cut-out is the face: the same person as the whole photo.
        whole = face_recognition.face_encodings(image)[0]
        padded = np.pad(face_image, ((40, 40), (40, 40), (0, 0)), mode="edge")
        assert face_recognition.compare_faces([whole], face_recognition.face_encodings(padded)[0]) == [True]


def test_identify_and_draw_boxes_on_faces(face_recognition, files, two_people, tmp_path):
    """identify_and_draw_boxes_on_faces.py: name each face of a two-person photo by its nearest known face."""
    obama_image = face_recognition.load_image_file(str(files["bush_1"]))
    obama_face_encoding = face_recognition.face_encodings(obama_image)[0]
    biden_image = face_recognition.load_image_file(str(files["powell_1"]))
    biden_face_encoding = face_recognition.face_encodings(biden_image)[0]
    known_face_encodings = [obama_face_encoding, biden_face_encoding]
    known_face_names = ["George W Bush", "Colin Powell"]

    unknown_image = face_recognition.load_image_file(str(two_people))
    face_locations = face_recognition.face_locations(unknown_image)
    face_encodings = face_recognition.face_encodings(unknown_image, face_locations)

    pil_image = Image.fromarray(unknown_image)
    draw = ImageDraw.Draw(pil_image)
    named = []
    for (top, right, bottom, left), face_encoding in zip(face_locations, face_encodings):
        matches = face_recognition.compare_faces(known_face_encodings, face_encoding)
        name = "Unknown"
        face_distances = face_recognition.face_distance(known_face_encodings, face_encoding)
        best_match_index = np.argmin(face_distances)
        if matches[best_match_index]:
            name = known_face_names[best_match_index]
        draw.rectangle(((left, top), (right, bottom)), outline=(0, 0, 255))
        _, _, _, text_height = draw.textbbox((0, 0), name)  # Pillow 10's textsize
        draw.rectangle(((left, bottom - text_height - 10), (right, bottom)), fill=(0, 0, 255), outline=(0, 0, 255))
        draw.text((left + 6, bottom - text_height - 5), name, fill=(255, 255, 255, 255))
        named.append((left, name))
    del draw
    pil_image.save(tmp_path / "image_with_boxes.jpg")
    assert [name for _, name in sorted(named)] == ["Colin Powell", "George W Bush"]
    assert (tmp_path / "image_with_boxes.jpg").stat().st_size > 0


# -- face_recognition_knn.py ---------------------------------------------------------------------------------------
def _knn_train(face_recognition, image_files_in_folder, train_dir, n_neighbors=None, knn_algo="ball_tree"):
    """The example's train(): one encoding per training photo that holds exactly one face."""
    from sklearn import neighbors

    X, y = [], []
    for class_dir in sorted(os.listdir(train_dir)):
        if not os.path.isdir(os.path.join(train_dir, class_dir)):
            continue
        for img_path in image_files_in_folder(os.path.join(train_dir, class_dir)):
            image = face_recognition.load_image_file(img_path)
            face_bounding_boxes = face_recognition.face_locations(image)
            if len(face_bounding_boxes) == 1:
                X.append(face_recognition.face_encodings(image, known_face_locations=face_bounding_boxes)[0])
                y.append(class_dir)
    if n_neighbors is None:
        n_neighbors = int(round(math.sqrt(len(X))))
    knn_clf = neighbors.KNeighborsClassifier(n_neighbors=n_neighbors, algorithm=knn_algo, weights="distance")
    knn_clf.fit(X, y)
    return knn_clf


def _knn_predict(face_recognition, X_img_path, knn_clf, distance_threshold=0.6):
    """The example's predict(): the nearest training face names a face when it is within the threshold."""
    X_img = face_recognition.load_image_file(X_img_path)
    X_face_locations = face_recognition.face_locations(X_img)
    if len(X_face_locations) == 0:
        return []
    faces_encodings = face_recognition.face_encodings(X_img, known_face_locations=X_face_locations)
    closest_distances = knn_clf.kneighbors(faces_encodings, n_neighbors=1)
    are_matches = [closest_distances[0][i][0] <= distance_threshold for i in range(len(X_face_locations))]
    return [(pred, loc) if rec else ("unknown", loc)
            for pred, loc, rec in zip(knn_clf.predict(faces_encodings), X_face_locations, are_matches)]


def test_face_recognition_knn(face_recognition, files, two_people, tmp_path):
    """face_recognition_knn.py: a KNN classifier over encodings (scikit-learn, Euclidean, 0.6 cut-off)."""
    pytest.importorskip("sklearn")
    from facegnet.compat.face_recognition_cli import image_files_in_folder

    train = {
        "colin_powell": [files["powell_1"], lfw_photo("Colin_Powell", 3), lfw_photo("Colin_Powell", 4)],
        "george_w_bush": [files["bush_1"], lfw_photo("George_W_Bush", 3), lfw_photo("George_W_Bush", 4)],
        "serena_williams": [files["serena_1"], lfw_photo("Serena_Williams", 3)],
    }
    for person, photos in train.items():
        (tmp_path / "train" / person).mkdir(parents=True)
        for i, photo in enumerate(photos):
            (tmp_path / "train" / person / f"img{i}.jpg").write_bytes(Path(photo).read_bytes())
    test_dir = tmp_path / "test"
    test_dir.mkdir()
    for name in ("bush_2", "powell_2", "serena_2", "chavez"):
        (test_dir / f"{name}.jpg").write_bytes(Path(files[name]).read_bytes())
    (test_dir / "two_people.jpg").write_bytes(two_people.read_bytes())
    Image.new("RGB", (160, 120), "gray").save(test_dir / "no_face.png")

    classifier = _knn_train(face_recognition, image_files_in_folder, str(tmp_path / "train"), n_neighbors=2)
    found = {}
    for image_file in sorted(os.listdir(test_dir)):
        predictions = _knn_predict(face_recognition, str(test_dir / image_file), classifier)
        found[image_file] = [name for name, (top, right, bottom, left) in sorted(predictions, key=lambda p: p[1][3])]
    assert found == {
        "bush_2.jpg": ["george_w_bush"],
        "chavez.jpg": ["unknown"],
        "no_face.png": [],
        "powell_2.jpg": ["colin_powell"],
        "serena_2.jpg": ["serena_williams"],
        "two_people.jpg": ["colin_powell", "george_w_bush"],
    }


# -- the video examples ----------------------------------------------------------------------------------------------
FRAMES_PER_PERSON = 4


@pytest.fixture(scope="module")
def clip(files, tmp_path_factory):
    """A 640×360 clip: four frames of George W Bush, four of Colin Powell, four of Vladimir Putin (a stranger),
    each photo pasted at a different place on a dark background, written with OpenCV's VideoWriter (MJPG)."""
    path = tmp_path_factory.mktemp("clip") / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 29.97, (640, 360))
    assert writer.isOpened()
    for person in ("bush_2", "powell_2", "putin"):
        photo = cv2.imread(str(files[person]))  # BGR, as a video holds it
        for k in range(FRAMES_PER_PERSON):
            frame = np.full((360, 640, 3), 30, np.uint8)
            x, y = 40 + 100 * k, 20 + 25 * k
            frame[y:y + 250, x:x + 250] = photo
            writer.write(frame)
    writer.release()
    return path


def test_facerec_from_video_file(face_recognition, files, clip, tmp_path):
    """facerec_from_video_file.py: name the known faces of every frame (tolerance 0.50) and write the video."""
    input_movie = cv2.VideoCapture(str(clip))
    length = int(input_movie.get(cv2.CAP_PROP_FRAME_COUNT))
    fourcc = cv2.VideoWriter_fourcc(*"MJPG")
    output_movie = cv2.VideoWriter(str(tmp_path / "output.avi"), fourcc, 29.97, (640, 360))

    lmm_image = face_recognition.load_image_file(str(files["bush_1"]))
    lmm_face_encoding = face_recognition.face_encodings(lmm_image)[0]
    al_image = face_recognition.load_image_file(str(files["powell_1"]))
    al_face_encoding = face_recognition.face_encodings(al_image)[0]
    known_faces = [lmm_face_encoding, al_face_encoding]

    names_per_frame = []
    frame_number = 0
    while True:
        ret, frame = input_movie.read()
        frame_number += 1
        if not ret:
            break
        rgb_frame = frame[:, :, ::-1]  # a view with a negative stride, as the example makes it
        face_locations = face_recognition.face_locations(rgb_frame)
        face_encodings = face_recognition.face_encodings(rgb_frame, face_locations)
        face_names = []
        for face_encoding in face_encodings:
            match = face_recognition.compare_faces(known_faces, face_encoding, tolerance=0.50)
            name = None
            if match[0]:
                name = "George W Bush"
            elif match[1]:
                name = "Colin Powell"
            face_names.append(name)
        for (top, right, bottom, left), name in zip(face_locations, face_names):
            if not name:
                continue
            cv2.rectangle(frame, (left, top), (right, bottom), (0, 0, 255), 2)
            cv2.rectangle(frame, (left, bottom - 25), (right, bottom), (0, 0, 255), cv2.FILLED)
            cv2.putText(frame, name, (left + 6, bottom - 6), cv2.FONT_HERSHEY_DUPLEX, 0.5, (255, 255, 255), 1)
        output_movie.write(frame)
        names_per_frame.append(face_names)
    input_movie.release()
    output_movie.release()

    assert length == 3 * FRAMES_PER_PERSON
    assert names_per_frame == ([["George W Bush"]] * FRAMES_PER_PERSON + [["Colin Powell"]] * FRAMES_PER_PERSON
                               + [[None]] * FRAMES_PER_PERSON)
    assert cv2.VideoCapture(str(tmp_path / "output.avi")).get(cv2.CAP_PROP_FRAME_COUNT) == length


def test_find_faces_in_batches(face_recognition, clip):
    """find_faces_in_batches.py: batch_face_locations over a batch of video frames (upsample 0).

    The example collects 128 frames before each batch; this 12-frame clip is collected in batches of 6.
    """
    batch = 6
    video_capture = cv2.VideoCapture(str(clip))
    frames, frame_count, found = [], 0, {}
    while video_capture.isOpened():
        ret, frame = video_capture.read()
        if not ret:
            break
        frame = frame[:, :, ::-1]
        frame_count += 1
        frames.append(frame)
        if len(frames) == batch:
            batch_of_face_locations = face_recognition.batch_face_locations(frames, number_of_times_to_upsample=0)
            for frame_number_in_batch, face_locations in enumerate(batch_of_face_locations):
                frame_number = frame_count - batch + frame_number_in_batch
                found[frame_number] = face_locations
                assert face_locations == face_recognition.face_locations(frames[frame_number_in_batch], 0)
            frames = []
    video_capture.release()
    assert sorted(found) == list(range(3 * FRAMES_PER_PERSON))
    for number, face_locations in found.items():
        (top, right, bottom, left), = face_locations  # one face a frame, where the photo was pasted
        k = number % FRAMES_PER_PERSON
        x, y = 40 + 100 * k, 20 + 25 * k
        assert x <= left < right <= x + 250 and y <= top < bottom <= y + 250
