"""Write a small synthetic book-rating dataset: ``interactions.csv`` and ``books.csv`` (the two files a shop or a
reading app would have).

SYNTHETIC: the books are real public-domain titles and authors, but every rating is made up by the model below,
so no number measured on these files says anything about real readers.

Model: each book has a genre and a quality q ~ N(0, 1); each user has a favourite genre and a mood m ~ N(0, 1.5)
(how generous they are). A rating on the 1..10 scale is ``round(5.5 + 2.0 * [genre == favourite] - 1.0 *
[genre != favourite] + q + m + noise)``, noise ~ N(0, 1.5), clipped to 1..10. Users rate 14 to 30 books, one a day.

Usage: ``python examples/books/make_books.py OUT_DIR``. Deterministic (seed 19): 1,328 ratings, about 33 KB.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

BOOKS = [
    ("Pride and Prejudice", "Jane Austen", "romance"), ("Emma", "Jane Austen", "romance"),
    ("Persuasion", "Jane Austen", "romance"), ("Sense and Sensibility", "Jane Austen", "romance"),
    ("Jane Eyre", "Charlotte Bronte", "romance"), ("Wuthering Heights", "Emily Bronte", "romance"),
    ("North and South", "Elizabeth Gaskell", "romance"), ("Middlemarch", "George Eliot", "romance"),
    ("A Room with a View", "E. M. Forster", "romance"), ("The Age of Innocence", "Edith Wharton", "romance"),
    ("Dracula", "Bram Stoker", "horror"), ("Frankenstein", "Mary Shelley", "horror"),
    ("The Turn of the Screw", "Henry James", "horror"), ("Carmilla", "Sheridan Le Fanu", "horror"),
    ("The Picture of Dorian Gray", "Oscar Wilde", "horror"), ("The Phantom of the Opera", "Gaston Leroux", "horror"),
    ("The Hound of the Baskervilles", "Arthur Conan Doyle", "mystery"),
    ("A Study in Scarlet", "Arthur Conan Doyle", "mystery"), ("The Moonstone", "Wilkie Collins", "mystery"),
    ("The Woman in White", "Wilkie Collins", "mystery"), ("The Mysterious Affair at Styles", "Agatha Christie", "mystery"),
    ("The Secret Adversary", "Agatha Christie", "mystery"), ("The Thirty-Nine Steps", "John Buchan", "mystery"),
    ("The Innocence of Father Brown", "G. K. Chesterton", "mystery"),
    ("The Time Machine", "H. G. Wells", "science fiction"), ("The War of the Worlds", "H. G. Wells", "science fiction"),
    ("The Invisible Man", "H. G. Wells", "science fiction"),
    ("Twenty Thousand Leagues Under the Seas", "Jules Verne", "science fiction"),
    ("Journey to the Center of the Earth", "Jules Verne", "science fiction"),
    ("From the Earth to the Moon", "Jules Verne", "science fiction"),
    ("The Lost World", "Arthur Conan Doyle", "science fiction"), ("Herland", "Charlotte Perkins Gilman", "science fiction"),
    ("Treasure Island", "Robert Louis Stevenson", "adventure"), ("Kidnapped", "Robert Louis Stevenson", "adventure"),
    ("The Count of Monte Cristo", "Alexandre Dumas", "adventure"), ("The Three Musketeers", "Alexandre Dumas", "adventure"),
    ("Robinson Crusoe", "Daniel Defoe", "adventure"), ("The Call of the Wild", "Jack London", "adventure"),
    ("White Fang", "Jack London", "adventure"), ("King Solomon's Mines", "H. Rider Haggard", "adventure"),
    ("Moby-Dick", "Herman Melville", "adventure"), ("The Prisoner of Zenda", "Anthony Hope", "adventure"),
]
GENRES = sorted({g for _, _, g in BOOKS})


def main(out: Path) -> None:
    rng = np.random.default_rng(19)
    quality = rng.normal(0, 1, len(BOOKS))
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "books.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["book_id", "title", "author", "genre"])
        for i, (t, a, g) in enumerate(BOOKS):
            w.writerow([f"b{i:03d}", t, a, g])
    rows = []
    day = 86_400
    for u in range(60):
        fav = GENRES[rng.integers(len(GENRES))]
        mood = rng.normal(0, 1.5)
        n = int(rng.integers(14, 31))
        start = 1_700_000_000 + int(rng.integers(0, 200)) * day
        for k, b in enumerate(rng.choice(len(BOOKS), size=n, replace=False)):
            g = BOOKS[b][2]
            r = 5.5 + (2.0 if g == fav else -1.0) + quality[b] + mood + rng.normal(0, 1.5)
            rows.append((f"r{u:03d}", f"b{b:03d}", int(np.clip(np.round(r), 1, 10)), start + k * day))
    with open(out / "interactions.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["reader", "book_id", "stars", "read_at"])
        w.writerows(rows)
    print(f"wrote {len(rows)} ratings by 60 readers of {len(BOOKS)} books to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python examples/books/make_books.py OUT_DIR")
    main(Path(sys.argv[1]))
