"""Regenerate the curate fixtures in this folder (text written for lima_lite's tests, in the real formats).

    $ python tests/assets/curate/make_fixtures.py

Stack Exchange: two sites in dump form (one `<row .../>` per line). The comment on each question says which
rule it must meet; tests/test_curate.py checks exactly those fates.
"""

import csv
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2] / "bench"))  # the one Posts.xml row writer, shared with the benchmark
from make_posts_xml import FOOTER, HEADER, row_xml  # noqa: E402

SQRT2 = (
    "<p>The classical proof is by contradiction and uses nothing more than the fact that every fraction can be "
    "reduced to lowest terms.</p>"
    "<ol><li>Suppose that <code>sqrt(2) = p/q</code> where <code>p</code> and <code>q</code> are integers with no "
    "common factor.</li><li>Squaring both sides gives <code>p^2 = 2 q^2</code>, so <code>p^2</code> is even.</li>"
    "<li>An odd number squared is odd, therefore <code>p</code> itself is even; write <code>p = 2k</code>.</li>"
    "<li>Substituting, <code>4k^2 = 2q^2</code>, so <code>q^2 = 2k^2</code> and <code>q</code> is even too.</li></ol>"
    "<p>Both numbers are now even, which contradicts the assumption that the fraction was in lowest terms. "
    "Hence no such fraction exists and the square root of two is irrational.</p>"
    "<p>There is a second, more general argument based on the <a href=\"https://en.wikipedia.org/wiki/"
    "Rational_root_theorem\">rational root theorem</a>: any rational root of the polynomial <code>x^2 - 2</code> "
    "must be an integer dividing 2, and none of 1, -1, 2 or -2 squares to 2. The same argument shows that the "
    "square root of any integer that is not a perfect square is irrational.</p>"
    "<img src=\"https://i.sstatic.net/proof.png\" alt=\"a diagram of the proof\">"
    "<p>A geometric version exists as well. Take an isosceles right triangle whose sides are the smallest "
    "possible integers; folding one leg onto the hypotenuse produces a smaller isosceles right triangle with "
    "integer sides, which is impossible. This infinite descent is the same idea as the parity argument, "
    "dressed in a picture, and it is often the version that students remember longest.</p>"
    "<p>Whichever proof is used, the important step is the one that turns a statement about a fraction into a "
    "statement about divisibility, because divisibility is where integers have structure that can be exploited.</p>"
)

FIBONACCI = (
    "<p>The naive recursion recomputes the same values exponentially many times, so it is hopeless beyond "
    "about forty terms. Two better approaches exist.</p>"
    "<h2>Iteration</h2><p>Keep only the last two values and walk forward. This takes linear time and constant "
    "memory:</p>"
    "<pre><code>def fib(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
    "</code></pre>"
    "<h2>Fast doubling</h2><p>For very large indices, use the identities</p>"
    "<ul><li><code>F(2k) = F(k) * (2*F(k+1) - F(k))</code></li><li><code>F(2k+1) = F(k)^2 + F(k+1)^2</code></li></ul>"
    "<p>which halve the index at every step, so the number of arithmetic operations grows with the logarithm "
    "of the index:</p>"
    "<pre><code>def fib_pair(n):\n    if n == 0:\n        return (0, 1)\n    a, b = fib_pair(n // 2)\n"
    "    c = a * (2 * b - a)\n    d = a * a + b * b\n    return (d, c + d) if n % 2 else (c, d)\n</code></pre>"
    "<p>The cost is then dominated by multiplying big integers, which Python does with the Karatsuba "
    "algorithm once the numbers are large. Computing the millionth Fibonacci number this way takes well under "
    "a second on an ordinary laptop, while the iterative version needs noticeably longer because it performs "
    "a million additions of numbers with hundreds of thousands of digits.</p>"
    "<p>The matrix power method is equivalent to fast doubling but does about twice as many multiplications, "
    "so it is usually only worth using when the matrix form is needed for another reason.</p>"
)

EUCLID_FIRST_PERSON = (
    "<p>I always explain it with a picture of tiles, because my students find the algebra dry. </p>"
    + "<p>The algorithm repeatedly replaces the larger number by its remainder modulo the smaller one. Every "
    "common divisor of the pair divides the remainder as well, so the set of common divisors never changes, "
    "and the numbers strictly decrease until the remainder is zero. The last nonzero value is the greatest "
    "common divisor of the original pair.</p>" * 4
)

RING_REFERS = (
    "<p>As mentioned in the other answer, a ring has two operations while a group has one.</p>"
    + "<p>A group is a set with a single associative operation, an identity element and inverses. A ring adds a "
    "second operation, usually written as multiplication, that distributes over addition; under addition a "
    "ring is an abelian group, but multiplication need not have inverses. The integers form a ring, and the "
    "nonzero rationals form a group under multiplication.</p>" * 4
)

LONG_ANSWER = ("<p>" + "Each term in the series is smaller than the one before it, and the ratio settles down. " * 70
               + "</p>")

CAST_IRON = (
    "<p>Rust forms when bare iron meets water and oxygen, so the goal is to keep a thin layer of polymerised oil "
    "between the metal and the air.</p>"
    "<ol><li>Dry the pan completely right after washing, ideally by heating it on the stove for a minute.</li>"
    "<li>While it is still warm, wipe on a very thin film of a neutral oil and buff off the excess.</li>"
    "<li>Store it somewhere dry, with a paper towel inside if it is stacked with other pans.</li></ol>"
    "<p>Soap is not the enemy it is often said to be: modern dish soap does not contain lye and will not strip a "
    "well-built seasoning. Long soaks are the real problem, because water finds every scratch.</p>"
    "<p>If orange spots appear anyway, scrub them off with steel wool, rinse, dry, and re-season the whole pan: "
    "coat it thinly with oil, turn it upside down in an oven at about 230 °C for an hour, and let it cool in the "
    "oven. Two or three rounds give a durable, dark finish. Acidic foods such as tomato sauce can wear the "
    "seasoning down, so cook them briefly or in a pan that has been seasoned many times.</p>"
    "<p>Finally, cooking with the pan often is the best protection of all; every session with fat adds to the "
    "layer, and a pan in daily use rarely rusts. Frying bacon, searing steaks and shallow-frying potatoes are "
    "especially good at building it up, while boiling water in the pan for long periods does the opposite.</p>"
)

BREAD = (
    "<p>Yeast is a living organism, and its metabolism roughly doubles for every ten degrees of warming up to "
    "about 35 °C. A warm kitchen therefore speeds up fermentation a great deal.</p>"
    "<ul><li>At 20 °C a typical dough doubles in about two hours.</li><li>At 27 °C the same dough can double in "
    "an hour or less.</li><li>Above roughly 40 °C the yeast starts to suffer, and at 60 °C it dies.</li></ul>"
    "<p>Faster is not always better, though. Slow fermentation gives enzymes and bacteria time to produce the "
    "acids and aromatic compounds that give bread its flavour, which is why many bakers deliberately retard "
    "dough in the refrigerator overnight. A dough risen quickly in a hot room tends to taste flat and can "
    "over-proof before the baker notices, collapsing in the oven.</p>"
    "<p>To control the rise, adjust the water temperature when mixing so that the dough ends up near 24 to 26 °C, "
    "and use less yeast in summer than in winter. A rule of thumb is to reduce the yeast by a quarter for every "
    "few degrees above the usual room temperature, then judge readiness by the poke test rather than by the "
    "clock: a floured finger should leave a dent that springs back slowly.</p>"
    "<p>Salt also matters: it slows yeast down, so a dough with too little salt rises fast and weakly.</p>"
)


def write_site(folder: Path, rows: list[str], broken: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(rows)
    if broken is not None:
        lines = body.splitlines(keepends=True)
        lines.insert(2, broken)
        body = "".join(lines)
    (folder / "Posts.xml").write_text(HEADER + body + FOOTER, encoding="utf-8")


def stackexchange() -> None:
    q = dict(PostTypeId=1, CreationDate="2014-05-01T09:00:00.000", Body="<p>Some context for the question.</p>")
    a = dict(PostTypeId=2, CreationDate="2014-05-02T09:00:00.000")
    math = [
        # 1: kept (top answer 2, score 40; answer 3 is lower)
        row_xml(Id=1, Score=25, Title="How do you prove that the square root of 2 is irrational?", **q),
        row_xml(Id=2, ParentId=1, Score=40, Body=SQRT2, **a),
        row_xml(Id=3, ParentId=1, Score=5, Body="<p>Use a calculator and look at the digits.</p>", **a),
        # 4: title_not_self_contained
        row_xml(Id=4, Score=12, Title="Why is this integral wrong?", **q),
        row_xml(Id=5, ParentId=4, Score=15, Body=SQRT2.replace("classical", "standard"), **a),
        # 6: answer_too_short
        row_xml(Id=6, Score=8, Title="What is the derivative of the exponential function?", **q),
        row_xml(Id=7, ParentId=6, Score=12, Body="<p>It is the function itself, <code>d/dx e^x = e^x</code>.</p>", **a),
        # 8: first_person
        row_xml(Id=8, Score=30, Title="How does the Euclidean algorithm compute greatest common divisors?", **q),
        row_xml(Id=9, ParentId=8, Score=30, Body=EUCLID_FIRST_PERSON, **a),
        # 10: refers_to_others
        row_xml(Id=10, Score=18, Title="What is the difference between a group and a ring?", **q),
        row_xml(Id=11, ParentId=10, Score=20, Body=RING_REFERS, **a),
        row_xml(Id=12, PostTypeId=5, Score=0, Body="<p>Tag wiki excerpt, not a question.</p>"),
        # 13: kept (code blocks and lists; a first-person title that stands alone)
        row_xml(Id=13, Score=50, Title="How do I compute large Fibonacci numbers efficiently?", **q),
        row_xml(Id=14, ParentId=13, Score=9, Body="<p>Memoise the recursion.</p>", **a),
        row_xml(Id=15, ParentId=13, Score=64, Body=FIBONACCI, **a),
        # 16: top_answer_score_low (best answer scores 9)
        row_xml(Id=16, Score=3, Title="Is every bounded sequence of real numbers convergent?", **q),
        row_xml(Id=17, ParentId=16, Score=9, Body=SQRT2.replace("classical", "usual"), **a),
        # 18: no_answer
        row_xml(Id=18, Score=2, Title="What is the sum of the first hundred prime numbers?", **q),
        # 19: answer_too_long
        row_xml(Id=19, Score=7, Title="Does the ratio test decide convergence of every power series?", **q),
        row_xml(Id=20, ParentId=19, Score=11, Body=LONG_ANSWER, **a),
    ]
    cooking = [
        # 1: kept (a first-person title that stands alone)
        row_xml(Id=1, Score=40, Title="How do I keep a cast iron pan from rusting after washing it?", **q),
        row_xml(Id=2, ParentId=1, Score=33, Body=CAST_IRON, **a),
        # 3: kept
        row_xml(Id=3, Score=22, Title="Why does bread dough rise faster in a warm kitchen?", **q),
        row_xml(Id=4, ParentId=3, Score=14, Body=BREAD, **a),
        # 5: near_duplicate of 1 (the same answer with two words changed; lower question score, so 1 is kept)
        row_xml(Id=5, Score=6, Title="How should a cast iron pan be stored to prevent rust?", **q),
        row_xml(Id=6, ParentId=5, Score=12, Body=CAST_IRON.replace("Finally", "Lastly").replace("durable", "hard"),
                **a),
    ]
    write_site(HERE / "stackexchange" / "math.stackexchange.com", math)
    write_site(HERE / "stackexchange" / "cooking.stackexchange.com", cooking)
    # A dump with a truncated row on line 5 (the third row): reported as Posts.xml:5.
    write_site(HERE / "stackexchange-broken" / "math.stackexchange.com", math,
               broken='  <row Id="99" PostTypeId="2" ParentId="1" Score="3" Body="&lt;p&gt;cut off\n')


LIGHTHOUSE = (
    "The lighthouse keeper had been dead for eleven years when the light came back on.\n\n"
    "Mara saw it first, from the deck of the ferry, a thin white blade turning over the water where nothing "
    "had turned for a decade. She said nothing. People on the island had learned not to talk about the "
    "lighthouse, the way they had learned not to swim past the second buoy or to whistle after dark.\n\n"
    "That night she climbed the hill with a torch and her father's old key. The door was already open. Inside, "
    "the spiral stairs were swept clean, and on every landing someone had left a cup of tea, still warm.\n\n"
    "At the top, the lamp turned slowly, and beside it sat a man in a wool coat, writing in a logbook. He did "
    "not look up. 'Ships still pass,' he said. 'Fewer than before. But they pass.'\n\n"
    "'You died,' Mara said.\n\n"
    "'I did,' he agreed, and turned the page. 'The light did not. Somebody has to write down who comes home.'\n\n"
    "She read over his shoulder. The last entry was the ferry, that afternoon, with her name beside it, and "
    "below it a line left empty, waiting for the next boat, and the next keeper."
)

SNOW = (
    "Snow fell upward on the morning the physicists finally admitted they did not understand gravity. "
    "It started in Oslo and spread south, flakes lifting off the pavement and drifting into a pale sky, and "
    "by noon every news channel showed the same picture: children lying on their backs, watching the ground "
    "leave.\n\nThe government issued a statement that said nothing. The church issued a statement that said "
    "too much. Engineers bolted chairs to floors and tied bicycles to railings, and for a few days the whole "
    "country moved carefully, one hand always on something solid.\n\nThen, on the fourth day, the snow "
    "stopped rising and simply hung in the air at the height of a tall person's shoulder, a white ceiling "
    "that stretched from coast to coast. People learned to walk beneath it. They said it was like living "
    "inside a cloud, quiet and soft, with every sound muffled. Nobody could explain it, and after a while "
    "nobody tried; they simply built taller doors and waited, as people always have, for the weather to change."
)


def pushshift() -> None:
    submissions = [
        {"id": "wp1", "subreddit": "WritingPrompts", "title": "[WP] A lighthouse turns on years after its keeper died.",
         "selftext": "", "score": 812, "num_comments": 4, "created_utc": 1546300800, "over_18": False},
        {"id": "wp2", "subreddit": "WritingPrompts", "title": "[WP] Gravity reverses, but only for snow.",
         "selftext": "", "score": 95, "num_comments": 2, "created_utc": 1546300900, "over_18": False},
        {"id": "wp3", "subreddit": "WritingPrompts", "title": "[WP] Your cat starts paying rent.",
         "selftext": "", "score": 40, "num_comments": 1, "created_utc": 1546301000, "over_18": False},
        {"id": "wp4", "subreddit": "WritingPrompts", "title": "[WP] The moon sends a letter of complaint.",
         "selftext": "", "score": 12, "num_comments": 0, "created_utc": 1546301100, "over_18": False},
        {"id": "wp5", "subreddit": "WritingPrompts", "title": "[OT] Weekly feedback thread",
         "selftext": "Post feedback here.", "score": 30, "num_comments": 0, "created_utc": 1546301200,
         "over_18": False},
        {"id": "wp6", "subreddit": "WritingPrompts", "title": "[WP] A lighthouse keeper returns as a ghost.",
         "selftext": "", "score": 20, "num_comments": 1, "created_utc": 1546301300, "over_18": False},
        {"id": "ar1", "subreddit": "AskReddit", "title": "What is the best advice you have ever received?",
         "selftext": "", "score": 5000, "num_comments": 900, "created_utc": 1546300800, "over_18": False},
        {"id": "ar2", "subreddit": "AskReddit", "title": "Thoughts on this?", "selftext": "", "score": 3,
         "num_comments": 2, "created_utc": 1546300801, "over_18": False},
        {"id": "ot1", "subreddit": "pics", "title": "My dog at the beach", "score": 100, "created_utc": 1546300802},
    ]
    comments = [
        {"id": "c1", "link_id": "t3_wp1", "parent_id": "t3_wp1", "author": "AutoModerator", "score": 900,
         "body": "Reminder: stories must be at least 100 words."},
        {"id": "c2", "link_id": "t3_wp1", "parent_id": "t3_wp1", "author": "quill", "score": 640,
         "body": LIGHTHOUSE + "\n\n[more stories](https://www.reddit.com/r/quill)"},
        {"id": "c3", "link_id": "t3_wp1", "parent_id": "t3_wp1", "author": "[deleted]", "score": 700,
         "body": "[deleted]"},
        {"id": "c4", "link_id": "t3_wp1", "parent_id": "t1_c2", "author": "reader", "score": 2000,
         "body": "A reply to a story is not a story. " * 40},
        {"id": "c5", "link_id": "t3_wp2", "parent_id": "t3_wp2", "author": "frost", "score": 88, "body": SNOW},
        {"id": "c6", "link_id": "t3_wp2", "parent_id": "t3_wp2", "author": "brief", "score": 3, "body": "Too short."},
        {"id": "c7", "link_id": "t3_wp3", "parent_id": "t3_wp3", "author": "catlady", "score": 31,
         "body": "The cat left forty dollars on the table."},
        {"id": "c8", "link_id": "t3_wp6", "parent_id": "t3_wp6", "author": "lamp", "score": 4, "body": LIGHTHOUSE},
        {"id": "c9", "link_id": "t3_ar1", "parent_id": "t3_ar1", "author": "sage", "score": 4000,
         "body": "Sleep on big decisions. " * 60},
    ]
    folder = HERE / "reddit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "RS_2019-01.ndjson").write_text("".join(json.dumps(s) + "\n" for s in submissions))
    (folder / "RC_2019-01.ndjson").write_text("".join(json.dumps(c) + "\n" for c in comments))


OMELETTE = (
    "This article explains how to cook a soft, folded French omelette in a few minutes.\n"
    "Crack three eggs into a bowl, add a pinch of salt and beat them with a fork until no streaks of white "
    "remain. Beating longer does not help; the goal is an even mixture, not foam.\n"
    "Heat a 20 cm non-stick pan over medium heat and add a knob of butter. When the foam subsides, pour in the "
    "eggs. Stir quickly with a spatula while shaking the pan, so that small curds form everywhere at once.\n"
    "When the eggs are set underneath but still glossy on top, stop stirring and let them sit for ten seconds. "
    "Tilt the pan away from you and roll the omelette over itself with the spatula, into a neat cylinder.\n"
    "Turn it out onto a warm plate, seam side down, and rub the top with a little butter so it shines. "
    "See [our egg guide](https://www.wikihow.com/Cook-Eggs) for other styles. ![omelette](https://pad.wikihow.com/omelette.jpg)\n"
    "Fillings such as grated cheese or chopped herbs go in just before rolling, in a line across the middle. "
    "Keep them small and few: a French omelette is about the eggs, and heavy fillings tear it.\n"
    "If the outside browns, the heat was too high. The ideal omelette is pale yellow all over, with a creamy "
    "centre that is just barely set. It takes practice, so the first two or three may look rough; they will "
    "still taste good, and every attempt teaches the timing a little better."
)

TIRE = (
    "Changing a flat tyre safely starts before touching the wheel.\n"
    "Pull over on flat, firm ground well away from traffic, switch on the hazard lights and apply the parking "
    "brake. Put wheel chocks or heavy stones behind the wheel diagonally opposite the flat one.\n"
    "Take out the spare, the jack and the wheel wrench. Loosen each lug nut half a turn while the wheel is still "
    "on the ground; the weight of the car stops the wheel from spinning.\n"
    "Place the jack at the lifting point shown in the owner's manual, usually a reinforced notch behind the "
    "front wheel or in front of the rear one. Raise the car until the flat tyre is about five centimetres off "
    "the ground.\n"
    "Remove the lug nuts completely, pull the wheel straight off and set it flat so it cannot roll away. Lift the "
    "spare onto the studs, line up the holes, and thread the nuts by hand.\n"
    "Lower the car until the tyre touches the ground, then tighten the nuts in a star pattern, a little at a "
    "time, so the wheel seats evenly. Lower the car fully and give each nut a final firm pull.\n"
    "Check the spare's pressure at the next petrol station, and remember that many compact spares are only "
    "rated for short distances at moderate speed, so have the original tyre repaired or replaced soon."
)


def wikihow() -> None:
    rows = [
        {"headline": "Beat the eggs.\nCook and roll.", "title": "How to Cook a French Omelette", "text": OMELETTE,
         "category": "Food and Entertaining"},
        {"headline": "Secure the car.\nSwap the wheel.", "title": "How to Change a Flat Tire", "text": TIRE,
         "category": "Cars & Other Vehicles"},
        {"headline": "Water it.", "title": "How to Water a Cactus",
         "text": "Water it rarely, and let the soil dry out.",
         "category": "Home and Garden"},
        {"headline": "About.", "title": "Frequently Asked Questions about wikiHow", "text": TIRE,
         "category": "wikiHow"},
    ]
    folder = HERE / "wikihow"
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "wikihowAll.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["headline", "title", "text", "category"])
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    stackexchange()
    pushshift()
    wikihow()
    print("fixtures written under", HERE)
