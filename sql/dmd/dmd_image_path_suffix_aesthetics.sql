-- dmd_image_path_suffix_aesthetics: one row per base row, and one per (subset, hash) that only
-- joined rows hold, each with the hash's image and aesthetic score: both are facts about the
-- hash, so the wide table must find them for every joined row, base row or not.
-- (base + joined-only hashes) left join image index (on hash) left join aesthetic (on subset, hash).
-- Join conditions name hash before subset: JVM Spark sorts both sides of a sort-merge join by its
-- keys in the order written and first compares an 8-byte prefix of the first key, which subset's
-- few values (two begin 'laion2B-') never decide (a 10M-row anti join: 31-40 s -> 20-24 s).
with base as (

    select * from laion.ods_laion_base

),

joined_only_hashes as (

    select distinct joined.subset, joined.hash
    from laion.ods_laion_joined as joined
    left anti join base
        on joined.hash = base.hash
        and joined.subset = base.subset

),

-- A joined-only hash has no base columns; its null file_name tells it from a base row.
keyed_rows as (

    select sample_id, url, text, width, height, similarity, hash, license, nsfw, language, file_name, subset
    from base

    union all

    select
        cast(null as bigint) as sample_id,
        cast(null as string) as url,
        cast(null as string) as text,
        cast(null as int) as width,
        cast(null as int) as height,
        cast(null as double) as similarity,
        hash,
        cast(null as string) as license,
        cast(null as string) as nsfw,
        cast(null as string) as language,
        cast(null as string) as file_name,
        subset
    from joined_only_hashes

),

downloaded_images as (

    select * from laion.ods_image_index
    where image_path is not null

),

-- One image per hash and one aesthetic score per (subset, hash). Few keys repeat, so only those
-- are ranked; ranking every row would sort the whole input for them.
repeated_image_hashes as (

    select hash
    from downloaded_images
    group by hash
    having count(*) > 1

),

-- A download can hold a sample twice; the order is total, so reruns agree.
image_per_hash as (

    select hash, image_path, image_suffix
    from downloaded_images
    left anti join repeated_image_hashes
        on downloaded_images.hash = repeated_image_hashes.hash

    union all

    select hash, image_path, image_suffix
    from (
        select
            downloaded_images.*,
            row_number() over (
                partition by downloaded_images.hash
                order by folder nulls last, file_name nulls last, key nulls last, image_path nulls last
            ) as image_rank
        from downloaded_images
        left semi join repeated_image_hashes
            on downloaded_images.hash = repeated_image_hashes.hash
    )
    where image_rank = 1

),

-- A source row without a score (null; the ODS reads NaN as null) is no score: the next source
-- holding one wins.
aesthetic as (

    select * from laion.ods_laion_aesthetic
    where aesthetic_score is not null

),

repeated_aesthetic_keys as (

    select subset, hash
    from aesthetic
    group by subset, hash
    having count(*) > 1

),

-- The first configured aesthetic source holding a score for a hash wins.
aesthetic_per_hash as (

    select subset, hash, aesthetic_score
    from aesthetic
    left anti join repeated_aesthetic_keys
        on aesthetic.hash = repeated_aesthetic_keys.hash
        and aesthetic.subset = repeated_aesthetic_keys.subset

    union all

    select subset, hash, aesthetic_score
    from (
        select
            aesthetic.*,
            row_number() over (
                partition by aesthetic.subset, aesthetic.hash
                order by source_rank, file_name nulls last, aesthetic_score desc nulls last
            ) as aesthetic_rank
        from aesthetic
        left semi join repeated_aesthetic_keys
            on aesthetic.hash = repeated_aesthetic_keys.hash
            and aesthetic.subset = repeated_aesthetic_keys.subset
    )
    where aesthetic_rank = 1

),

final as (

    select
        keyed_rows.sample_id,
        keyed_rows.url,
        keyed_rows.text,
        keyed_rows.width,
        keyed_rows.height,
        keyed_rows.similarity,
        keyed_rows.hash,
        keyed_rows.license,
        keyed_rows.nsfw,
        keyed_rows.language,
        aesthetic_per_hash.aesthetic_score,
        image_per_hash.image_path,
        image_per_hash.image_suffix,
        keyed_rows.file_name,
        keyed_rows.subset
    from keyed_rows
    left join image_per_hash
        on keyed_rows.hash = image_per_hash.hash
    left join aesthetic_per_hash
        on keyed_rows.hash = aesthetic_per_hash.hash
        and keyed_rows.subset = aesthetic_per_hash.subset

)

select * from final
