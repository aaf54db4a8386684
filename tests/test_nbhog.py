"""The hogged-notebook plugin's output check (tests/nbhog.py): what it refuses and what it lets pass."""
from tests.nbhog import forbidden_text


def stream(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_forbidden_words_in_any_text_output_are_found():
    outputs = [stream("about $inf a month instead of $inf (nan% less)\n"),
               {"output_type": "execute_result", "data": {"text/plain": "cost    NaN"}},
               {"output_type": "display_data", "data": {"text/html": "<td>-inf</td>"}},
               stream("/x/casestudy.py:12: RuntimeWarning: invalid value encountered in scalar divide\n")]
    found = forbidden_text(outputs)
    assert [f.split(" in ")[0] for f in found] == ["'inf'", "'inf'", "'nan'", "'NaN'", "'-inf'", "'RuntimeWarning'"]


def test_ordinary_words_images_and_widgets_pass():
    outputs = [stream("info: inferred 3 finance rows in 2 nanoseconds; NaT is a time\n"),
               {"output_type": "display_data", "data": {"image/png": "bmFuIGluZg==",
                                                         "text/html": '<img src="data:image/png;base64,a+nan+inf/">',
                                                         "application/vnd.jupyter.widget-view+json": {"x": "NaN"}}}]
    assert forbidden_text(outputs) == []
