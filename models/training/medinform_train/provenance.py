"""Where each dataset comes from (summarised from ../shared/datasets/PROVENANCE.md) and what a
user of each model must know about it: the model cards' data and limitations sections."""

PROVENANCE = {
    "malaria": (
        "NIH/NLM malaria cell images (Lister Hill National Center for Biomedical Communications; "
        "Giemsa-stained thin smears from Chittagong Medical College Hospital, Bangladesh), as "
        "50x50 grayscale crops from the repository vishxlshxrma/Malaria_Classification (commit "
        "968bc04). Released publicly by the NLM without a formal licence; cite Rajaraman S et al., "
        "PeerJ 2018;6:e4568.",
        [
            "Trained on 50x50 grayscale crops: the source had already converted and downscaled the "
            "NIH RGB originals. Colour, which microscopists use, is not seen by the model; larger "
            "uploads are converted to gray and resized to 50x50.",
            "One laboratory and one staining protocol: smears from other sites, stains or "
            "cameras may score differently.",
            "It classifies one segmented cell; it does not find cells in a whole-field image.",
        ],
    ),
    "tuberculosis": (
        "Shenzhen Hospital and Montgomery County chest X-ray sets (U.S. National Library of "
        "Medicine), 96x96 RGB copies from the repository shabazbelim/TB_analyzer (commit 3b9eb5b). "
        "Released publicly by the NLM for research without a formal licence; cite Jaeger S et al., "
        "Quant Imaging Med Surg 2014;4(6):475-477 and IEEE Trans Med Imaging 2014;33(2):233-245, "
        "and Candemir S et al., IEEE Trans Med Imaging 2014;33(2):577-590.",
        [
            "The images were already downscaled to 96x96 by the source: fine detail is lost, and "
            "the model sees them at its input size (see Model).",
            "Two sites (Shenzhen, China; Montgomery County, USA), adults; per-site figures above.",
            "Small test split (about a hundred images): the confidence intervals are wide.",
        ],
    ),
    "pneumonia": (
        "NIH ChestX-ray8/14 (NIH Clinical Center), 500 + 500 frontal adult images drawn by Ozturk T "
        "et al. (Comput Biol Med 2020;121:103792) in the repository muhammedtalo/COVID-19 (commit "
        "ee3e2cf), re-encoded to 512x512 grayscale JPEG. The NIH Clinical Center states no "
        "restrictions on use; cite Wang X et al., CVPR 2017, and acknowledge the NIH Clinical "
        "Center (https://nihcc.app.box.com/v/ChestXray-NIHCC).",
        [
            "Labels were text-mined from radiology reports and are noisy, especially 'Pneumonia': "
            "a part of the measured error is label error, and the ceiling of any model is low.",
            "Adults only; not the paediatric (Kermany) set.",
            "Few images (611 from 433 patients): the test split is small.",
        ],
    ),
    "covid19": (
        "Cohen JP et al., COVID-19 Image Data Collection (arXiv:2003.11597; via "
        "GeneralBlockchain/covid-19-chest-xray-lung-bounding-boxes-dataset, commit 103688c; "
        "per-image licences incl. CC BY-NC-SA/ND), the Actualmed COVID-19 Chest X-ray Dataset "
        "(agchung/Actualmed-COVID-chestxray-dataset, commit 27240dd; research use) and NIH "
        "ChestX-ray8 'No finding' images (NIH Clinical Center). Non-commercial use only, because "
        "of the per-image licences.",
        [
            "Positives and most negatives come from different sources (Cohen: images from "
            "publications and websites; NIH: one US hospital). The model may partly learn the "
            "source (image style, text, borders) rather than the disease; the per-source figures "
            "above show how it does on each. Within one source the test split holds too few "
            "images of the minority class to show that the model tells Covid-19 from no finding "
            "there: a high overall ROC AUC is no evidence that it does.",
            "Covid-19 on a chest X-ray is not specific: other viral pneumonias look alike, and "
            "they are not in the negatives here.",
            "Few images (612 from 394 sources): the test split is small.",
        ],
    ),
    "skin_cancer": (
        "ISIC Archive dermoscopy images (International Skin Imaging Collaboration), the Kaggle "
        "compilation 'Skin cancer ISIC The International Skin Imaging Collaboration' (9 "
        "diagnoses, 180x180) from the repository AmitBytesSage/Melanoma-Skin-Cancer-Detection-Model "
        "(commit c9a7a70). HAM10000 images (Tschandl P et al., Sci Data 2018;5:180161) are CC "
        "BY-NC-SA 4.0; the others CC-0/CC-BY/CC-BY-NC: attribute the ISIC Archive, non-commercial "
        "use.",
        [
            "Malignant = melanoma, basal cell carcinoma, squamous cell carcinoma, actinic "
            "keratosis; benign = the other five diagnoses. Diagnoses outside these nine are unseen.",
            "Sensitivity differs by diagnosis: read the per-diagnosis figures above before "
            "relying on the model for melanoma in particular.",
            "Dermoscopic images only: a phone photo without a dermatoscope is out of distribution.",
            "Mostly light skin types, as in the ISIC Archive.",
        ],
    ),
    "diabetic_retinopathy": (
        "RetinaMNIST (MedMNIST v2; Yang J et al., Sci Data 2023;10:41), derived from the DeepDRiD "
        "challenge's regular fundus photographs, centre-cropped and resized to 28x28 RGB; CC BY "
        "4.0. Carried by the repository MikeFlores19/PARADIGMAS-DE-PROGRAMACION (commit cc953f9, "
        "file retinamnist.npz, MD5 equal to the official MedMNIST checksum). Only the official "
        "train (1,080) and val (120) images are here; the official test split (400) is held "
        "apart for independent evaluation and was never seen.",
        [
            "Research use only. At 28x28 the lesions that grade retinopathy (microaneurysms, "
            "haemorrhages, hard exudates, new vessels) are invisible: the model can only pick up "
            "coarse colour and brightness patterns, and it must never be used to screen anyone.",
            "The held-out figures are on MedMNIST's official val split (120 images), not on its "
            "official test split, which is not in this project's data: they are not directly "
            "comparable with MedMNIST's published test figures, and with 120 images (6 of grade "
            "4) the intervals are wide.",
            "MedMNIST gives no patient or eye ids (DeepDRiD has two images per eye, two eyes per "
            "patient): the official split was kept, but the cross-validation folds inside the "
            "official train split may hold two images of one eye on two sides, which makes the "
            "out-of-fold figures (and so the threshold and temperatures) somewhat optimistic.",
        ],
    ),
    None: (
        "No real fundus data is available to this project yet: the model is not trained and is "
        "listed as unavailable. Its training path (five ICDR grades, APTOS-style "
        "`id_code,diagnosis` labels or a labels.csv) is tested on generated images only.",
        ["Untrained: the service refuses jobs for it until real weights are trained and measured."],
    ),
}
