"""Ordinary English and Korean words that say nothing about a Shapes scene.

Two uses: the course tokenizer learns them (so a word a learner types splits into a few pieces, not one per letter),
and the free training wordings (`grammar.py`) sprinkle a few of them into captions as filler, so that a CLIP trained
on those captions learns to read the words that name colour, shape, size and position and to let the others pass.
None of these words is a colour, a shape, a size or a position.
"""

from __future__ import annotations

EN_WORDS = tuple(dict.fromkeys("""
the a an this that these those here there it its we you they he she i me my our your their
is are was were be been being has have had do does did can could will would may might should must
and or but so then also just only even still very quite really rather too
of in on at to for with from by about into after before through
see seen saw look looks looking show shows showing shown find found give gives take put set get
make makes made draw drawn drew paint painted sketch picture image photo photograph drawing scene view
frame canvas page screen card panel tile grid board window box area spot place part piece
thing object item figure element mark sign symbol icon form outline pattern design style
what which who where when how why whose now today again always never often
just simply exactly clearly nicely neatly roughly almost nearly clean simple
new old good nice fine clear sharp soft flat
such
please let us try note notice spotted placed sitting standing lying resting located positioned
appears appear seems seem contains contain includes include holds hold features feature depicts depict
example sample test quick background
""".split()))

KO_WORDS = tuple(dict.fromkeys("""
이 그 저 이것 그것 저것 여기 거기 저기 우리 너 나 제 우리의 이번 다음 어떤
있다 있는 있음 보다 보인다 보이는 본다 봐 보세요 그려진 그린 그려 그림 사진 이미지 화면 장면
도형 물체 무늬 표시 기호 그림판 칸 자리 부분 곳 배경 바탕
그리고 또 또는 하지만 그런데 및 그래서 함께 같이 정말 아주 매우 조금 약간 꽤 거의 딱 바로
것 수 때
새 깨끗한 단순한 선명한
예시 예 문제 답 보기 설명 내용 확인 찾기 놓기 두기 놓여 있다 담긴 포함된 나타난
""".split()))
